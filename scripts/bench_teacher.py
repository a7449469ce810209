"""Teacher-generation throughput: the prepare_data teacher in bf16 vs fp32 (and CTranslate2, when installed).

    python scripts/bench_teacher.py [--data data/default] [--rows 128] [--batch-size 32] [--out benchmarks/teacher_cpu.json]

Runs the same rows (prompt + transcript of a prepare_data output, sorted by length as the builder does)
through ``prepare_data.Teacher`` (transformers ``generate``, greedy, left padding, the config's token budgets)
in each dtype, and through a CTranslate2 generator converted from the same LLM (fp32 and int8), on one
machine in one run. Reports rows/s and how often each backend's answer equals the bf16 teacher's.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

from audio_minichat.dataprep.config import load_config
from audio_minichat.dataprep.teacher import Teacher


def _rows(data: str, n: int) -> list[tuple[str, str]]:
    from datasets import load_from_disk

    ds = load_from_disk(data)
    ds = ds["train"] if hasattr(ds, "keys") else ds
    ds = ds.select_columns(["prompt", "transcript"]).select(range(min(n, len(ds))))
    return sorted(((r["prompt"], r["transcript"]) for r in ds), key=lambda x: len(x[0]) + len(x[1]))


def run_hf(tcfg: dict, items, bs: int) -> tuple[float, list[str]]:
    teacher = Teacher(tcfg)
    teacher.answer(items[:2])  # warm-up
    start, outs = time.perf_counter(), []
    for b in range(0, len(items), bs):
        outs += [text for text, _ in teacher.answer(items[b : b + bs])]
    return time.perf_counter() - start, outs


def run_ct2(tcfg: dict, items, bs: int, quantization: str, threads: int) -> tuple[float, list[str]]:
    import ctranslate2

    teacher = Teacher(tcfg)  # prompt format, budgets and the LLM weights come from the same place
    with tempfile.TemporaryDirectory() as tmp:
        teacher.model.language_model.save_pretrained(tmp + "/hf")
        teacher.tokenizer.save_pretrained(tmp + "/hf")
        ctranslate2.converters.TransformersConverter(tmp + "/hf").convert(tmp + "/ct2", quantization=quantization)
        gen = ctranslate2.Generator(tmp + "/ct2", device="cpu", compute_type=quantization, intra_threads=threads)
        tok = teacher.tokenizer
        prompts = [tok.convert_ids_to_tokens(tok(teacher.text_prompt(p, t), add_special_tokens=False)["input_ids"])
                   for p, t in items]
        budgets = [teacher.budget(p, t) for p, t in items]
        start, outs = time.perf_counter(), []
        for b in range(0, len(items), bs):
            res = gen.generate_batch(prompts[b : b + bs], max_length=max(budgets[b : b + bs]), sampling_topk=1,
                                     include_prompt_in_result=False, end_token=tok.eos_token)
            for r, budget in zip(res, budgets[b : b + bs]):
                ids = r.sequences_ids[0]  # without the end token: shorter than the budget means it stopped there
                outs.append(teacher.finish(ids + [tok.eos_token_id] if len(ids) < budget else ids, budget)[0])
        return time.perf_counter() - start, outs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" / "data_default.yaml"))
    ap.add_argument("--data", default="data/default", help="a prepare_data output (its prompts and transcripts)")
    ap.add_argument("--rows", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--no-ct2", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    tcfg = load_config(args.config)["teacher"]
    items = _rows(args.data, args.rows)
    runs = {}
    for dtype in ("bfloat16", "float32"):
        secs, outs = run_hf({**tcfg, "dtype": dtype}, items, args.batch_size)
        runs[f"transformers-{dtype}"] = (secs, outs)
        print(f"transformers {dtype}: {len(items) / secs:.2f} rows/s", file=sys.stderr, flush=True)
    if not args.no_ct2:
        try:
            import ctranslate2  # noqa: F401
        except ImportError:
            print("ctranslate2 not installed: skipped", file=sys.stderr)
        else:
            for q in ("float32", "int8_float32"):
                secs, outs = run_ct2({**tcfg, "dtype": "float32"}, items, args.batch_size, q, int(tcfg.get("threads") or 2))
                runs[f"ctranslate2-{q}"] = (secs, outs)
                print(f"ctranslate2 {q}: {len(items) / secs:.2f} rows/s", file=sys.stderr, flush=True)
    ref = runs["transformers-bfloat16"][1]
    result = {
        "machine": platform.processor() or platform.machine(), "rows": len(items), "batch_size": args.batch_size,
        "data": args.data,
        "backends": {name: {"seconds": round(secs, 2), "rows_per_s": round(len(items) / secs, 2),
                            "same_answer_as_bf16": round(sum(a == b for a, b in zip(outs, ref)) / len(ref), 3)}
                     for name, (secs, outs) in runs.items()},
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
