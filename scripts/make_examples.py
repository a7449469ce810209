#!/usr/bin/env python
"""Regenerate examples/*.wav from examples/*.txt with training-style voices (never piper joe).

    pip install -e . --no-deps && bash scripts/install_system_deps.sh
    python scripts/make_examples.py            # writes examples/short.wav, examples/news_2min.wav

Paragraphs (blank-line separated) are synthesised one by one and joined with a short pause.
Output: 16 kHz mono 16-bit PCM wav.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

from audio_minichat.dataprep.tts import TARGET_SAMPLE_RATE, Voice, check_training_voice, synthesize, write_wav

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# (text file, wav file, voice, pause between paragraphs in seconds)
JOBS = [
    ("short.txt", "short.wav", Voice("espeak-ng", "en-gb-x-rp", variant="f2", rate=0.8, pitch=55), 0.4),
    ("news_2min.txt", "news_2min.wav", Voice("flite", "slt", rate=0.85), 0.6),
]


def render(text: str, voice: Voice, pause_s: float) -> np.ndarray:
    check_training_voice(voice)
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]
    pause = np.zeros(int(pause_s * TARGET_SAMPLE_RATE), dtype=np.float32)
    parts = []
    for i, para in enumerate(paragraphs):
        if i:
            parts.append(pause)
        parts.append(synthesize(para, voice))
    return np.concatenate(parts)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", type=Path, default=EXAMPLES)
    args = p.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for txt, wav, voice, pause in JOBS:
        text = (EXAMPLES / txt).read_text(encoding="utf-8")
        audio = render(text, voice, pause)
        out = args.out_dir / wav
        write_wav(out, audio)
        print(f"{out}: {audio.size / TARGET_SAMPLE_RATE:.1f} s, {out.stat().st_size / 1e6:.2f} MB, voice {voice.id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
