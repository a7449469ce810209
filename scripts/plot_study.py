"""Learning curves of the hearing study's arms: validation response perplexity under audio (the text prompt's as a
line) and the training loss, against the CPU minutes each arm has used (the study's budget axis; ``cpu_s`` of the
run's log lines, training/budget.py).

    python scripts/plot_study.py [--runs runs/study [runs/study-long]] [--out docs/hearing-study.png]

Reads each arm's ``final/log_history.json`` (or, for a run in progress, its latest checkpoint's
``trainer_state.json``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def history(run: Path) -> list[dict]:
    final = run / "final" / "log_history.json"
    if final.is_file():
        return json.loads(final.read_text())
    states = sorted(run.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    return json.loads(states[-1].read_text())["log_history"] if states else []


def cpu_minutes(entry: dict) -> float:
    return float(entry["cpu_s"]) / 60.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs="+", default=["runs/study"], help="folders of arms (runs/study runs/study-long)")
    ap.add_argument("--out", default="docs/hearing-study.png")
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    text_ppl = []
    arms = [(run, run.name if i == 0 else f"{run.name} ({Path(folder).name})")
            for i, folder in enumerate(args.runs) for run in sorted(Path(folder).iterdir()) if run.is_dir()]
    for run, label in arms:
        logs = history(run)
        evals = [h for h in logs if "eval_ppl_audio" in h]
        losses = [h for h in logs if "loss" in h and "train_loss" not in h]
        if not evals and not losses:
            continue
        if evals:
            left.plot([cpu_minutes(h) for h in evals], [h["eval_ppl_audio"] for h in evals], marker="o", label=label)
            text_ppl += [h["eval_ppl_text"] for h in evals]
        if losses:
            right.plot([cpu_minutes(h) for h in losses], [h["loss"] for h in losses], label=label)
    if text_ppl:
        left.axhline(sum(text_ppl) / len(text_ppl), color="black", linestyle="--", label="text prompt (teacher)")
    left.set(xlabel="CPU minutes", ylabel="validation response perplexity (audio prompt)", yscale="log",
             title="Does the LLM hear? (lower is better)")
    right.set(xlabel="CPU minutes", ylabel="training loss (0.5 ntp + 0.5 logit + 1.0 feature)", title="Training loss")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(args.out)


if __name__ == "__main__":
    main()
