"""A long test recording: examples/news_2min.wav, then spoken XSum documents (espeak-ng or piper joe), with a pause
of --pause seconds between the parts, until --minutes of audio; 16 kHz PCM16 WAV written block by block.

    python scripts/long_recording.py --minutes 60 --out /tmp/meeting_60min.wav          # espeak-ng (fast)
    python scripts/long_recording.py --minutes 10 --voice joe --out /tmp/meeting_10min.wav

The parts' texts go to OUT with .txt (one per paragraph, in order). Used for docs/recordings.md ("Long recordings").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--voice", default="espeak", choices=["espeak", "joe"])
    p.add_argument("--pause", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)

    from audio_minichat.dataprep.tts import synthesize
    from audio_minichat.eval.benchmark import evaluation_voice, load_documents, select_documents

    voice = evaluation_voice(args.voice)
    docs = select_documents(load_documents(), 200, args.seed)
    rate, goal = 16000, int(args.minutes * 60 * 16000)
    rng = np.random.default_rng(args.seed)
    texts, written = [], 0
    out = Path(args.out)
    with sf.SoundFile(str(out), "w", samplerate=rate, channels=1, subtype="PCM_16") as fh:
        parts = iter([("news", None)] + [(d["id"], d["document"]) for d in docs])
        while written < goal:
            name, text = next(parts)
            if text is None:
                audio, _ = sf.read(str(ROOT / "examples" / "news_2min.wav"), dtype="float32")
                text = (ROOT / "examples" / "news_2min.txt").read_text(encoding="utf-8").strip()
            else:
                audio = synthesize(text, voice)
            pause = (0.0005 * rng.standard_normal(int(args.pause * rate))).astype(np.float32)  # a quiet room
            piece = np.concatenate([audio, pause])[: goal - written]
            fh.write(np.clip(piece, -1, 1))
            written += len(piece)
            texts.append(text)
    out.with_suffix(".txt").write_text("\n\n".join(texts) + "\n", encoding="utf-8")
    print(f"{out}: {written / rate / 60:.1f} min, {len(texts)} parts")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
