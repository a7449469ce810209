"""The LLM step alone on the CPU: how each way of holding the weights (``SpeechLLM(dtype=...)``: float32, bfloat16,
auto) times and answers.

    OMP_NUM_THREADS=1 python scripts/bench_llm_cpu.py [--arms float32,auto,bfloat16] [--repeats 3] [--threads 1]
        [--answers 10] [--out benchmarks/llm_cpu.json]

``auto`` is decided with ``--threads`` set (with more than one thread it is float32: utils.cpu_features).

Timing: text-mode generation of ``--new-tokens`` (128, forced: no early stop) after the summary prompt around
examples/news_2min.txt (396 tokens with the default's tokenizer), split into the prompt (prefill: until the first
new token) and the mean time per later token; the arms run interleaved (arm A, arm B, ..., then again) so a load
change on a shared machine hits them alike; medians over ``--repeats``. Answers: each arm's greedy text-mode summary
(the CLI's decoding: the checkpoint's generation config, up to 128 tokens) of the first ``--answers`` spoken-XSum
documents (eval.benchmark's selection, seed 0), and of examples/*.txt with three prompts; reported: how many differ
from the first arm's and their ROUGE-L F1 against it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from transformers.generation.streamers import BaseStreamer

from audio_minichat.inference.speech_llm import SpeechLLM
from audio_minichat.utils.cpu_features import cpu_flags
from audio_minichat.utils.dtypes import dtype_name

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PROMPTS = (None, "What is the main point of this text? Answer in one sentence.", "List three facts from the text.")


class _Stamps(BaseStreamer):
    """The time of each ``put``: the prompt, then every new token."""

    def __init__(self):
        self.times: list[float] = []

    def put(self, value) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def time_generation(llm: SpeechLLM, content: str, new_tokens: int) -> dict:
    built = llm.processor.build_prompt(llm.processor.audio_with_text(None, "before"), transcripts=[content])
    inputs = llm.processor(text=built)
    stamps = _Stamps()
    with torch.no_grad():
        start, cpu = time.perf_counter(), time.process_time()
        llm.model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, streamer=stamps)
        total, cpu = time.perf_counter() - start, time.process_time() - cpu
    t = stamps.times
    # cpu_s: the process's CPU time (all threads), steadier than wall time when other jobs share the cores
    return {"prompt_tokens": int(inputs["input_ids"].shape[1]), "total_s": total, "prefill_s": t[1] - t[0],
            "per_token_s": (t[-1] - t[1]) / max(len(t) - 2, 1), "cpu_s": cpu}


def answer_items(num_docs: int) -> list[tuple[str, str, str | None]]:
    """(name, content, prompt): XSum documents with the summary prompt, the examples with PROMPTS."""
    items = []
    if num_docs:
        from audio_minichat.eval.benchmark import load_documents, select_documents

        items += [(f"xsum/{d['id']}", d["document"], None) for d in select_documents(load_documents(), num_docs, 0)]
    for path in sorted(EXAMPLES.glob("*.txt")):
        items += [(f"{path.name}/{i}", path.read_text(encoding="utf-8"), p) for i, p in enumerate(PROMPTS)]
    return items


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.expanduser("~/.cache/audio_minichat/audio-minichat-default"))
    ap.add_argument("--arms", default="float32,auto,bfloat16", help="SpeechLLM dtype values, comma-separated")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--answers", type=int, default=0, help="XSum documents whose answers are compared (0: timing only)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    arms = args.arms.split(",")
    models = {arm: SpeechLLM(args.model, dtype=arm) for arm in arms}
    content = (EXAMPLES / "news_2min.txt").read_text(encoding="utf-8")
    for llm in models.values():
        time_generation(llm, content, 4)  # warm-up
    runs = {arm: [] for arm in arms}
    loads = []
    for r in range(args.repeats):
        for arm in arms:
            runs[arm].append(time_generation(models[arm], content, args.new_tokens))
            loads.append(os.getloadavg()[0])
            print(f"round {r + 1} {arm}: " + ", ".join(f"{k} {v:.3f}" for k, v in runs[arm][-1].items()), flush=True)
    report = {
        "machine": {"processor": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch_capability": torch.backends.cpu.get_cpu_capability(),
                    "bf16_flags": sorted(f for f in cpu_flags() if "bf16" in f or f.startswith("amx")),
                    "torch": torch.__version__, "threads": args.threads, "load_1min": [round(x, 2) for x in loads]},
        "new_tokens": args.new_tokens,
        "arms": {arm: {"dtype": dtype_name(m.dtype), "llm_quantization": m.llm_quantization, "reason": m.plan_reason,
                       **{k: statistics.median(x[k] for x in runs[arm]) for k in runs[arm][0]}, "runs": runs[arm]}
                 for arm, m in models.items()},
    }
    if args.answers:
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
        items = answer_items(args.answers)
        answers = {arm: [m.text(c, prompt=p, max_new_tokens=128).text for _, c, p in items] for arm, m in models.items()}
        ref = answers[arms[0]]
        report["answers"] = {"items": [name for name, _, _ in items], "reference_arm": arms[0], "per_arm": {
            arm: {"changed": sum(a != b for a, b in zip(ans, ref)), "of": len(ref),
                  "rougeL_f1_vs_reference": statistics.mean(scorer.score(b, a)["rougeL"].fmeasure for a, b in zip(ans, ref)),
                  "texts": ans} for arm, ans in answers.items()}}
    for arm in arms:  # each round's ratio to the first arm's run of the same round, then the median
        report["arms"][arm]["paired_ratio_total_s"] = statistics.median(
            x["total_s"] / y["total_s"] for x, y in zip(runs[arm], runs[arms[0]]))
        report["arms"][arm]["paired_ratio_cpu_s"] = statistics.median(
            x["cpu_s"] / y["cpu_s"] for x, y in zip(runs[arm], runs[arms[0]]))
    for arm, r in report["arms"].items():
        print(f"{arm}: {r['dtype']} {r['llm_quantization']}: total {r['total_s']:.2f} s (CPU {r['cpu_s']:.2f} s), prompt "
              f"{r['prefill_s']:.2f} s, {1000 * r['per_token_s']:.1f} ms/token; vs {arms[0]} x{r['paired_ratio_total_s']:.2f} "
              f"wall, x{r['paired_ratio_cpu_s']:.2f} CPU" + (f"; answers changed {report['answers']['per_arm'][arm]['changed']}"
              f"/{len(report['answers']['items'])}, ROUGE-L {report['answers']['per_arm'][arm]['rougeL_f1_vs_reference']:.3f}"
              if args.answers else ""))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
