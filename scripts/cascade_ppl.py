"""Where the cascade sits on the study's perplexity scale: the teacher's responses scored with Whisper's transcript
as the text prompt (the cascade's input) instead of the true transcript (ppl_text) or the audio (ppl_audio).

A recognition-free route that hears as well as the cascade reads should reach about this perplexity on the same rows;
with the learning curves (docs/hearing-study.md) it says how far the study's arms are from the cascade.

    python scripts/cascade_ppl.py --model ~/.cache/audio_minichat/audio-minichat-qformer_lora --data data/study \
        --limit 48 --out benchmarks/study/cascade_ppl.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a checkpoint that keeps Whisper's decoder (any variant of the default)")
    p.add_argument("--data", default="data/study")
    p.add_argument("--split", default="validation")
    p.add_argument("--limit", type=int, default=48, help="the first N rows (the study's training runs score 48)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--out", default="benchmarks/study/cascade_ppl.json")
    args = p.parse_args(argv)

    from audio_minichat.inference.speech_llm import SpeechLLM
    from audio_minichat.metrics.wer import word_error_rate
    from audio_minichat.training import DataConfig, DistillationCollator, decode_audio, load_rows, response_perplexity

    llm = SpeechLLM(args.model, dtype="bfloat16")
    cfg = DataConfig()
    rows = list(load_rows(args.data, args.split, args.limit))  # rows as dicts (a Dataset slices into columns)
    start = time.perf_counter()
    heard = []
    for i, row in enumerate(rows):
        hyp = llm.transcribe(decode_audio(row[cfg.audio_column], f"{args.split} row {i}"), 16000).text
        heard.append({**row, cfg.transcript_column: hyp})
    asr_s = time.perf_counter() - start
    collator = DistillationCollator(llm.processor, cfg)

    def ppl_text(items):
        batches = [collator(items[i : i + args.batch_size]) for i in range(0, len(items), args.batch_size)]
        with torch.no_grad():
            return response_perplexity(llm.model, batches)

    true, cascade = ppl_text(rows), ppl_text(heard)
    wer = word_error_rate([r[cfg.transcript_column] for r in rows], [h[cfg.transcript_column] for h in heard])
    result = {"rows": len(rows), "data": args.data, "split": args.split, "model": str(args.model),
              "ppl_text": true["ppl_text"], "ppl_cascade": cascade["ppl_text"], "ppl_audio": true["ppl_audio"],
              "wer": wer, "asr_s": round(asr_s, 1)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
