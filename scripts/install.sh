#!/usr/bin/env bash
# Installs audio-minichat and everything it needs on a fresh Debian machine (as root, offline but for
# the package registries).  `--test` adds the test-only dependencies.  Safe to run again: fast when done.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f scripts/install_system_deps.sh ]; then
  bash scripts/install_system_deps.sh
fi
extra=""
if [ "${1:-}" = "--test" ]; then extra="[test]"; fi
python -m pip install -q -e ".${extra}"
