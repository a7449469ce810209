"""Curves of the posterior route's alignment stage (training/align_posterior.py): held-out token error, CTC loss per
token against the clip's own transcript and against the other transcripts (the blind floor), and the retrieval probe's
top-1, per voice, against rows seen.

    python scripts/plot_align.py checkpoints/align/posterior_ctc/progress.jsonl docs/align_posterior.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(progress: str, out: str) -> int:
    records = [json.loads(line) for line in Path(progress).read_text().splitlines() if line.strip()]
    voices = sorted(records[0]["eval"])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    rows = [r["rows"] for r in records]
    for voice, style, color in zip(voices, ("-o", "--s"), ("tab:blue", "tab:orange")):
        ev = [r["eval"][voice] for r in records]
        kw = {"color": color}
        axes[0].plot(rows, [e["token_error"] for e in ev], style, label=f"{voice}", **kw)
        axes[1].plot(rows, [e["own_loss_per_token"] for e in ev], style, label=f"{voice}: own transcript", **kw)
        axes[1].plot(rows, [e["blind_loss_per_token"] for e in ev], style, alpha=0.35, label=f"{voice}: other transcripts (blind)", **kw)
        axes[2].plot(rows, [e["retrieval_top1"] for e in ev], style, label=f"{voice}: top-1", **kw)
        axes[2].plot(rows, [e["retrieval_top5"] for e in ev], style, alpha=0.35, label=f"{voice}: top-5", **kw)
    n = records[0]["eval"][voices[0]]["clips"]
    axes[2].axhline(1 / n, color="grey", lw=0.8, ls=":", label=f"chance (1/{n})")
    axes[0].set(title="held-out token error (best path, a measure only)", xlabel="training rows", ylim=(0, 1.2))
    axes[1].set(title="CTC loss per token", xlabel="training rows", yscale="log")
    axes[2].set(title="retrieval probe: own transcript among held-out", xlabel="training rows", ylim=(0, 1.02))
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("posterior route, alignment stage (CTC, no LLM in the step): held-out sentences, unseen voice joe and espeak-ng")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:3]))
