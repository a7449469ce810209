#!/usr/bin/env bash
# The main job on a fresh machine: install, build the offline default (cached after the first run), and
# summarize the two-minute example recording in the three modes, the default mode first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
audio-minichat build-default
echo "== cascade, the default mode (Whisper tiny.en transcribes; the LLM reads the transcript) =="
audio-minichat summarize examples/news_2min.wav --mode cascade
echo "== e2e (Whisper tiny.en decodes inside the model; the LLM reads each step's top-8 token probabilities as a mix of its own token embeddings: a soft cascade) =="
audio-minichat summarize examples/news_2min.wav --mode e2e
echo "== text (the article as text: the upper bound the speech modes aim at) =="
audio-minichat summarize examples/news_2min.txt --mode text
