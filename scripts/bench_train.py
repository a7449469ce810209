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

``--cached`` compares instead the step as it runs today (encoder, teacher and student every step; batch 1) with the
step from cached frozen work (``data.cache_dir``: training/feature_cache.py; the cache is built first, its time
reported apart) on the same rows, model and losses, at batch 1 and at ``--batch-size``.
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


def run_loop(model, collator, rows, batch_size: int, steps: int, device, cfg: LossConfig, step_fn=None) -> list[float]:
    """Samples/s of each timed optimizer step (the first step is warm-up and not reported). ``step_fn(batch)``
    returns the loss; default: the uncached distillation step."""
    step_fn = step_fn or (lambda batch: distillation_step(model, model, batch, cfg)[0])
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    rates = []
    for step in range(steps + 1):
        chunk = [rows[(step * batch_size + i) % len(rows)] for i in range(batch_size)]
        start = time.perf_counter()
        batch = {k: v.to(device) for k, v in collator(chunk).items()}
        step_fn(batch).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step:
            rates.append(batch_size / (time.perf_counter() - start))
    return rates


def bench_cached(args, model, processor, collator, rows, device, run, model_dir) -> None:
    import tempfile

    from audio_minichat.training.feature_cache import CachedCollator, prepare_cached_split
    from audio_minichat.training.losses import cached_distillation_step

    data_cfg = DataConfig()
    n = args.batch_size * args.steps
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        cached = prepare_cached_split(model, processor, rows, args.data or "synthetic", "train", data_cfg, run.losses, tmp,
                                      args.topk, shard_size=len(rows))
        cache_s = time.perf_counter() - start
        model.train()
        uncached = statistics.median(run_loop(model, collator, rows, 1, n, device, run.losses))
        cc = CachedCollator(processor, data_cfg, run.losses.feature_layers)
        step = lambda batch: cached_distillation_step(model, model, batch, run.losses)[0]  # noqa: E731
        one = statistics.median(run_loop(model, cc, cached, 1, n, device, run.losses, step))
        many = statistics.median(run_loop(model, cc, cached, args.batch_size, args.steps, device, run.losses, step))
    result = {
        "model": model_dir, "device": str(device), "threads": torch.get_num_threads(), "frozen_dtype": args.frozen_dtype,
        "config": args.config, "data": args.data, "rows": len(rows), "topk": args.topk,
        "uncached_batch1_samples_per_s": round(uncached, 3), "cached_batch1_samples_per_s": round(one, 3),
        f"cached_batch{args.batch_size}_samples_per_s": round(many, 3),
        "speedup_batch1": round(one / uncached, 2), f"speedup_batch{args.batch_size}": round(many / uncached, 2),
        "cache_build_rows_per_s": round(len(rows) / cache_s, 2),
    }
    print(json.dumps(result, indent=2))
    print(f"\nuncached (batch 1): {uncached:.2f} samples/s | cached batch 1: {one:.2f} (x{one / uncached:.2f}) | cached batch "
          f"{args.batch_size}: {many:.2f} (x{many / uncached:.2f})  [median of timed steps]", file=sys.stderr)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))


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
    ap.add_argument("--cached", action="store_true", help="uncached step vs the step from cached features and teacher targets")
    ap.add_argument("--topk", type=int, default=64, help="--cached: teacher tokens kept per response position")
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
    if args.cached:
        return bench_cached(args, model, processor, collator, rows, device, run, model_dir)

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
