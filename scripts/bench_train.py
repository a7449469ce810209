"""Training throughput: the seed's loop (batch 1) vs batched distillation, side by side on one machine.

    python scripts/bench_train.py [--config configs/train_default.yaml] [--model DIR] [--data DIR]
                                  [--batch-size 8] [--steps 6] [--device cpu]

Both loops run the same model, data, losses (next-token + logit + feature distillation) and AdamW on the
trainable parameters (with ``--config``: what that training config trains, its losses and frozen dtype;
without: the projector alone, paper loss weights). The seed-style loop processes one utterance per optimizer step (the original code
supports only batch size 1); the batched loop uses ``--batch-size`` utterances per step through
``DistillationCollator`` / ``train_trainer.distillation_step`` (what the Trainer runs). Reports samples/s (median over timed
steps after one warm-up step) and the ratio. Data: a prepare_data output (``--data``) or, without it,
espeak-ng readings of corpus sentences whose transcript doubles as the response (lengths are what
matter for throughput).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from audio_minichat.assets.default_build import build_default
from audio_minichat.modeling_audio_minichat import AudioMiniChatForConditionalGeneration
from audio_minichat.processing_audio_minichat import AudioMiniChatProcessor
from audio_minichat.training import (
    DataConfig,
    DistillationCollator,
    LossConfig,
    RunConfig,
    cast_frozen,
    configure_trainable,
    distillation_step,
    load_rows,
)


def synthetic_rows(n: int) -> list[dict]:
    from audio_minichat.dataprep.corpora import build_text_pool
    from audio_minichat.dataprep.tts import synthesize, training_voices

    texts = build_text_pool(n, seed=1, min_words=8, max_words=30)
    voices = [v for v in training_voices(seed=1, n=8) if v.engine == "espeak-ng"] or training_voices(seed=1, n=1)
    return [
        {"audio": {"array": synthesize(t["text"], voices[i % len(voices)]), "sampling_rate": 16000},
         "transcript": t["text"], "prompt": "<|audio|>", "response": t["text"]}
        for i, t in enumerate(texts)
    ]


def dataset_rows(path: str, n: int) -> list[dict]:
    ds = load_rows(path, "train", n)
    return [ds[i] for i in range(len(ds))]


def run_loop(model, collator, rows, batch_size: int, steps: int, device, cfg: LossConfig) -> list[float]:
    """Samples/s of each timed optimizer step (the first step is warm-up and not reported)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    rates = []
    for step in range(steps + 1):
        chunk = [rows[(step * batch_size + i) % len(rows)] for i in range(batch_size)]
        start = time.perf_counter()
        batch = {k: v.to(device) for k, v in collator(chunk).items()}
        loss = distillation_step(model, model, batch, cfg)[0]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step:
            rates.append(batch_size / (time.perf_counter() - start))
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=None,
                    help="a training config (configs/*.yaml): its model, what trains, losses and frozen dtype")
    ap.add_argument("--model", default=None, help="AudioMiniChat checkpoint (default: the config's, else the offline default)")
    ap.add_argument("--data", default=None, help="prepare_data output; default: synthesized espeak sentences")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=6, help="timed steps of the batched loop")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--frozen-dtype", default=None, help="default: the config's, else bfloat16")
    ap.add_argument("--out", default=None, help="write the result JSON here")
    args = ap.parse_args()

    device = torch.device(args.device)
    run = RunConfig.from_yaml(args.config) if args.config else RunConfig()
    model_dir = args.model or run.model or str(build_default())
    args.frozen_dtype = args.frozen_dtype or run.frozen_dtype or "bfloat16"
    model = AudioMiniChatForConditionalGeneration.from_pretrained(model_dir)
    configure_trainable(model, run.trainable)
    cast_frozen(model, getattr(torch, args.frozen_dtype))
    model.to(device).train()
    processor = AudioMiniChatProcessor.from_pretrained(model_dir)
    n_rows = args.batch_size * (args.steps + 1)
    rows = dataset_rows(args.data, n_rows) if args.data else synthetic_rows(n_rows)
    collator = DistillationCollator(processor, DataConfig())

    # Equal work for both: the seed loop sees as many samples as the batched loop.
    seed_rates = run_loop(model, collator, rows, 1, args.batch_size * args.steps, device, run.losses)
    batched_rates = run_loop(model, collator, rows, args.batch_size, args.steps, device, run.losses)
    seed, batched = statistics.median(seed_rates), statistics.median(batched_rates)
    result = {
        "model": model_dir, "device": str(device), "device_name": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(), "frozen_dtype": args.frozen_dtype, "batch_size": args.batch_size,
        "seed_loop_samples_per_s": round(seed, 3), "batched_samples_per_s": round(batched, 3),
        "speedup": round(batched / seed, 2), "timed_steps": {"seed": len(seed_rates), "batched": len(batched_rates)},
        "data": args.data or "synthetic espeak-ng corpus sentences", "config": args.config,
        "trainable": asdict(run.trainable),
    }
    print(json.dumps(result, indent=2))
    print(f"\nseed-style loop (batch 1): {seed:.2f} samples/s | batched (batch {args.batch_size}): {batched:.2f} samples/s "
          f"| speedup x{batched / seed:.2f}  [{result['device_name']}, median of timed steps]", file=sys.stderr)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
