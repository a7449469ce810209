"""Alignment runs side by side (training/align_posterior.py progress files): held-out token error and CTC loss per
token (own transcript; the blind floor faint) against rows seen, per voice, one colour per run. Runs with the same
seed, batch and schedule saw the same rows at the same step, so the curves compare heads, not data.

    python scripts/plot_align_compare.py docs/align_head_context.png \\
        checkpoints/align/posterior_ctc/progress.jsonl:MLP checkpoints/align/posterior_ctc_conv/progress.jsonl:conv_mlp
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(path: str) -> list[dict]:
    """The progress file's evaluations in order of rows (a resumed run's repeated last point once)."""
    seen, out = set(), []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            if "eval" in record and record["rows"] not in seen:
                seen.add(record["rows"])
                out.append(record)
    return out


def main(out: str, *runs: str) -> int:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    colors = ("tab:blue", "tab:red", "tab:green", "tab:purple")
    for (spec, color) in zip(runs, colors):
        path, _, label = spec.partition(":")
        records = load(path)
        rows = [r["rows"] for r in records]
        for voice, style in zip(sorted(records[0]["eval"]), ("-o", "--s")):
            ev = [r["eval"][voice] for r in records]
            axes[0].plot(rows, [e["token_error"] for e in ev], style, color=color, ms=3, label=f"{label or path}, {voice}")
            axes[1].plot(rows, [e["own_loss_per_token"] for e in ev], style, color=color, ms=3, label=f"{label or path}, {voice}")
            axes[1].plot(rows, [e["blind_loss_per_token"] for e in ev], style, color=color, alpha=0.25, ms=2)
    axes[0].set(title="held-out token error (best path, a measure only)", xlabel="training rows", ylim=(0.3, 1.0))
    axes[1].set(title="CTC loss per token (faint: other transcripts, the blind floor)", xlabel="training rows", yscale="log")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("posterior alignment: the head's temporal context, same rows and schedule (unseen voice joe, espeak-ng)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(out)
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit("usage: plot_align_compare.py OUT.png PROGRESS.jsonl[:LABEL] ...")
    raise SystemExit(main(sys.argv[1], *sys.argv[2:]))
