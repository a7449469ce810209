"""Learning curves of the hearing study's arms: validation response perplexity under audio (the text prompt's as a
line) and the training loss, against the CPU minutes each arm has used (the study's budget axis; ``cpu_s`` of the
run's log lines, training/budget.py).

    python scripts/plot_study.py [--runs runs/study [runs/study-long]] [--out docs/hearing-study.png] \
        [--anchor benchmarks/study/cascade_ppl.json] [--fit qformer_dense_lora]

Reads each arm's ``final/log_history.json`` or its latest checkpoint's ``trainer_state.json``, whichever reaches the
later step. ``--anchor``: the cascade's perplexity on the same rows (scripts/cascade_ppl.py) as a line.
``--fit ARM``: a third panel, log-log, with a power law ppl = a * minutes^-b fitted to that arm's evaluations (its
longest run) after the first ``--fit-from`` minutes, and a straight line through the last half of them, both extended
towards the anchor; the projections are printed and written beside the plot (``.fit.json``).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def history(run: Path) -> list[dict]:
    """The longer of the run's final log and its latest checkpoint's (a resumed run checkpoints past an old final/)."""
    logs = []
    final = run / "final" / "log_history.json"
    if final.is_file():
        logs.append(json.loads(final.read_text()))
    states = sorted(run.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    if states:
        logs.append(json.loads(states[-1].read_text())["log_history"])
    return max(logs, key=lambda log: max((h.get("step", 0) for h in log), default=0), default=[])


def cpu_minutes(entry: dict) -> float:
    return float(entry["cpu_s"]) / 60.0


def least_squares(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(slope, intercept) of the least-squares line through the points."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return slope, my - slope * mx


def power_fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least squares of log ppl on log minutes: (a, b) with ppl = a * minutes ** -b."""
    slope, intercept = least_squares([math.log(t) for t, _ in points], [math.log(p) for _, p in points])
    return math.exp(intercept), -slope


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs="+", default=["runs/study"], help="folders of arms (runs/study runs/study-long)")
    ap.add_argument("--out", default="docs/hearing-study.png")
    ap.add_argument("--anchor", default=None, help="cascade_ppl.json (scripts/cascade_ppl.py): the cascade's perplexity")
    ap.add_argument("--fit", default=None, metavar="ARM", help="fit and extend this arm's curve (third panel)")
    ap.add_argument("--fit-from", type=float, default=10.0, help="fit the evaluations after this many CPU minutes")
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3 if args.fit else 2, figsize=(16 if args.fit else 11, 4.2))
    left, right = axes[0], axes[1]
    text_ppl, fit_points = [], {}
    anchor = json.loads(Path(args.anchor).read_text()) if args.anchor else None
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
            if run.name == args.fit:
                points = [(cpu_minutes(h), h["eval_ppl_audio"]) for h in evals]
                if len(points) > len(fit_points.get("points", [])):
                    fit_points = {"label": label, "points": points}
        if losses:
            right.plot([cpu_minutes(h) for h in losses], [h["loss"] for h in losses], label=label)
    if text_ppl:
        left.axhline(sum(text_ppl) / len(text_ppl), color="black", linestyle="--", label="text prompt (teacher)")
    if anchor:
        left.axhline(anchor["ppl_cascade"], color="grey", linestyle=":", label="Whisper transcript as prompt (cascade)")
    if args.fit:
        report = fit_panel(axes[2], fit_points, args, anchor, sum(text_ppl) / max(len(text_ppl), 1))
        Path(args.out).with_suffix(".fit.json").write_text(json.dumps(report, indent=1) + "\n")
        print(json.dumps(report))
    left.set(xlabel="CPU minutes", ylabel="validation response perplexity (audio prompt)", yscale="log",
             title="Does the LLM hear? (lower is better)")
    right.set(xlabel="CPU minutes", ylabel="training loss (0.5 ntp + 0.5 logit + 1.0 feature)", title="Training loss")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(args.out)


def fit_panel(ax, fit_points: dict, args, anchor: dict | None, text_ppl: float) -> dict:
    """The fitted arm's evaluations, its power law and its last half's straight line, log-log, extended to 10x the
    minutes seen or past where the line would reach the anchor."""
    points = fit_points.get("points", [])
    used = [(t, p) for t, p in points if t >= args.fit_from]
    if len(used) < 3:
        raise SystemExit(f"--fit {args.fit}: {len(used)} evaluations after {args.fit_from} CPU minutes; need 3 or more.")
    a, b = power_fit(used)
    seen = max(t for t, _ in points)
    target = anchor["ppl_cascade"] if anchor else None
    reach = (a / target) ** (1 / b) if target and b > 0 else None
    # the optimistic reading: the last half of the evaluations' straight-line fall, kept up
    half = used[len(used) // 2 :]
    rate, _ = least_squares([t for t, _ in half], [p for _, p in half])  # ppl per CPU minute
    line_reach = seen + (points[-1][1] - target) / -rate if target and rate < 0 else None
    end = max(seen * 10, (line_reach or 0) * 1.5)
    grid = [seen * (end / seen) ** (i / 50) for i in range(51)]
    ax.plot([t for t, _ in points], [p for _, p in points], marker="o", linestyle="none", label=fit_points["label"])
    ax.plot([t for t, _ in used] + grid, [a * t ** -b for t, _ in used] + [a * t ** -b for t in grid], color="C3",
            linestyle="--", label=f"power law: {a:.1f} * min^-{b:.3f}")
    if rate < 0:
        line = [(t, points[-1][1] + rate * (t - seen)) for t in grid]
        line = [(t, p) for t, p in line if p > 0.5 * (target or text_ppl)]
        ax.plot([t for t, _ in line], [p for _, p in line], color="C2", linestyle="-.",
                label=f"straight line: {60 * rate:.2f} ppl per CPU hour")
    if target:
        ax.axhline(target, color="grey", linestyle=":", label="cascade")
    ax.axhline(text_ppl, color="black", linestyle="--", label="text prompt")
    ax.set(xscale="log", yscale="log", xlabel="CPU minutes (log)", ylabel="validation perplexity (audio)",
           title="At this rate")
    return {"arm": args.fit, "label": fit_points["label"], "fit_from_min": args.fit_from, "evals_fitted": len(used),
            "a": round(a, 4), "b": round(b, 5), "cpu_minutes_seen": round(seen, 1),
            "ppl_last": round(points[-1][1], 3), "ppl_cascade": target,
            "power_law_cpu_hours_to_cascade": round(reach / 60, 1) if reach else None,
            "line_ppl_per_cpu_hour": round(60 * rate, 3),
            "line_cpu_hours_to_cascade": round(line_reach / 60, 1) if line_reach else None}


if __name__ == "__main__":
    main()
