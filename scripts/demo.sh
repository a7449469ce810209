#!/usr/bin/env bash
# The main job on a fresh machine: install, build the offline default (cached after the first run), and
# summarize the two-minute example recording in all three modes (end-to-end, ASR cascade, text).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
audio-minichat build-default
echo "== e2e (speech -> Whisper decoding, read as token posteriors + decoder states -> LLM embeddings) =="
audio-minichat summarize examples/news_2min.wav --mode e2e
echo "== cascade (Whisper ASR -> LLM) =="
audio-minichat summarize examples/news_2min.wav --mode cascade
echo "== text (the article as text: the upper bound) =="
audio-minichat summarize examples/news_2min.txt --mode text
