"""What more training rows buy: validation response perplexity under audio of the same arm trained on nested
prefixes of the training rows, against the training samples it has seen, and each arm's best perplexity against its
number of rows, with a power law in the rows extended towards the cascade's perplexity (docs/hearing-study.md,
third sitting).

    python scripts/plot_data_scaling.py --arm 384=runs/study-data/n384 --arm 767=runs/study-data/n767 \
        --arm 1534=checkpoints/study/qformer_dense_lora_base/checkpoint-516 \
        --anchor benchmarks/study/cascade_ppl.json --out docs/hearing-study-data.png

``--arm ROWS=FOLDER``: a run folder (its final log or latest checkpoint, as scripts/plot_study.py reads it) or one
checkpoint folder (its ``trainer_state.json``). Samples seen = optimizer step x ``--samples-per-step`` (the study's
batch 1 x 4 accumulated). An arm's best perplexity is the lowest mean of ``--smooth`` neighbouring evaluations
(evaluation noise is about +-0.2) among those within ``--max-samples`` samples seen (default: the fewest any arm has
seen, so every arm is compared on the same training samples). The fit and its projection are printed and written
beside the plot (``.json``).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from plot_study import history, power_fit


def evaluations(folder: Path) -> list[dict]:
    state = folder / "trainer_state.json"
    logs = json.loads(state.read_text())["log_history"] if state.is_file() else history(folder)
    evals = [h for h in logs if "eval_ppl_audio" in h]
    if not evals:
        raise SystemExit(f"{folder}: no evaluation with eval_ppl_audio in its log (expected a training run's folder)")
    return evals


def best(ppl: list[float], smooth: int) -> float:
    """The lowest mean of ``smooth`` neighbouring values (all of them when there are fewer)."""
    k = min(smooth, len(ppl))
    return min(sum(ppl[i : i + k]) / k for i in range(len(ppl) - k + 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arm", action="append", required=True, metavar="ROWS=FOLDER")
    ap.add_argument("--anchor", default=None, help="cascade_ppl.json (scripts/cascade_ppl.py)")
    ap.add_argument("--samples-per-step", type=int, default=4)
    ap.add_argument("--smooth", type=int, default=3)
    ap.add_argument("--max-samples", type=int, default=None,
                    help="compare the arms' best perplexities within this many samples seen (default: the fewest any arm saw)")
    ap.add_argument("--out", default="docs/hearing-study-data.png")
    args = ap.parse_args()
    arms = []
    for spec in args.arm:
        rows, sep, folder = spec.partition("=")
        if not sep or not rows.isdigit():
            raise SystemExit(f"--arm {spec!r}: expected ROWS=FOLDER, e.g. 384=runs/study-data/n384")
        arms.append({"rows": int(rows), "folder": folder, "evals": evaluations(Path(folder))})
    arms.sort(key=lambda a: a["rows"])
    def seen(evaluation: dict) -> int:
        return evaluation["step"] * args.samples_per_step

    max_samples = args.max_samples or min(seen(arm["evals"][-1]) for arm in arms)
    for arm in arms:
        within = [h["eval_ppl_audio"] for h in arm["evals"] if seen(h) <= max_samples]
        if not within:
            raise SystemExit(f"{arm['folder']}: no evaluation within --max-samples {max_samples} "
                             f"(its first is at {seen(arm['evals'][0])} samples)")
        arm["best_ppl"] = best(within, args.smooth)
    anchor = json.loads(Path(args.anchor).read_text()) if args.anchor else None
    text_ppl = arms[0]["evals"][-1]["eval_ppl_text"]
    a, b = power_fit([(arm["rows"], arm["best_ppl"]) for arm in arms]) if len(arms) >= 2 else (None, None)
    target = anchor["ppl_cascade"] if anchor else None
    rows_to_cascade = (a / target) ** (1 / b) if target and b and b > 0 else None

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4))
    for arm in arms:
        left.plot([seen(h) for h in arm["evals"]], [h["eval_ppl_audio"] for h in arm["evals"]],
                  marker="o", label=f"{arm['rows']:,} training rows")
    left.axvline(max_samples, color="grey", linewidth=0.8, label=f"best compared within {max_samples:,} samples")
    right.axhline(text_ppl, color="black", linestyle="--", label="text prompt (teacher)")
    if target:
        right.axhline(target, color="grey", linestyle=":", label="Whisper transcript as prompt (cascade)")
    left.set(xlabel="training samples seen", ylabel="validation response perplexity (audio prompt)",
             title=f"The same arm on more rows (lower is better; text prompt {text_ppl:.2f})")
    right.plot([arm["rows"] for arm in arms], [arm["best_ppl"] for arm in arms], marker="o", linestyle="none",
               color="C0", label=f"best (mean of {args.smooth} neighbouring evaluations)")
    if a is not None:
        end = max(arms[-1]["rows"] * 100, (rows_to_cascade or 0) * 1.5)
        grid = [arms[0]["rows"] * (end / arms[0]["rows"]) ** (i / 60) for i in range(61)]
        right.plot(grid, [a * n ** -b for n in grid], color="C3", linestyle="--", label=f"power law: {a:.1f} * rows^-{b:.3f}")
    right.set(xscale="log", yscale="log", xlabel="training rows (log)", ylabel="best validation perplexity (audio)",
              title="What more rows buy")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    report = {"arms": [{"rows": arm["rows"], "folder": arm["folder"], "evaluations": len(arm["evals"]),
                        "samples_seen": seen(arm["evals"][-1]),
                        "passes": round(seen(arm["evals"][-1]) / arm["rows"], 2),
                        "ppl_last": round(arm["evals"][-1]["eval_ppl_audio"], 3), "best_ppl": round(arm["best_ppl"], 3)}
                       for arm in arms],
              "smooth": args.smooth, "max_samples": max_samples, "a": None if a is None else round(a, 4), "b": None if b is None else round(b, 5),
              "ppl_text": round(text_ppl, 3), "ppl_cascade": target,
              "rows_to_cascade": None if rows_to_cascade is None else round(rows_to_cascade),
              "ppl_at_10x_rows": None if a is None else round(a * (10 * arms[-1]["rows"]) ** -b, 2),
              "rows_to_cascade_note": "power law in rows through the arms' best perplexities; None: it never gets there"}
    Path(args.out).with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report))
    print(args.out)


if __name__ == "__main__":
    main()
