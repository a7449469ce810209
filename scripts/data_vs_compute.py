"""Fresh rows against repeated rows at equal training samples: what the alignment stage's data buys apart from its
compute (docs/hearing-study.md, eighth sitting).

    python scripts/data_vs_compute.py --run fresh=checkpoints/align/posterior_ctc_conv \
        --run 3200=checkpoints/align/posterior_ctc_conv_u3200 --run 800=checkpoints/align/posterior_ctc_conv_u800 \
        --max-step 600 --out docs/align_data_vs_compute.png

Every run is the same alignment stage (app/align.py: the same head, seed, batch, candidates, learning-rate schedule,
evaluation voices and held-out sentences), differing only in ``--unique-rows``: ``fresh`` sees a new row at every
sample, ``N`` the first N of the same rows over and over. So at a given step every run has spent the same compute on
the same number of samples; what differs is how many distinct rows those samples were.

The held-out CTC loss per token (mean of the two evaluation voices) is fitted with the data-constrained form of
Muennighoff et al. (2023), an irreducible term and a power law in the *effective* rows:

    L(S, U) = E + A * D(S, U) ** -alpha,   D = S while S <= U, else U + U * R* * (1 - exp(-(S / U - 1) / R*))

(S samples seen, U distinct rows: a repeated row is worth less each time, R* the repetitions at which it is worth
1/e of a fresh one). E and A are solved by least squares for every (alpha, R*) on a grid, the best pair kept; 90 %
intervals from resampling the points. The fit is checked by leaving each repeated arm out and predicting it from the
others. Points enter the fit from
``--min-step`` (the first evaluations are the warm-up, where every run is far from what its rows allow) to
``--max-step`` (the fresh run's learning rate falls after 551 steps, and it alone ran further), and in each run only
up to its lowest held-out loss (the repeated runs; the fresh run's points all enter): past it a run overfits its repeated rows (the held-out loss rises), which this form,
never rising, does not describe; those points are plotted, open. Nothing beyond the points' range is claimed: E is
where these points level off, not a promise about more rows.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

VOICES = ("joe", "espeak")


def read_run(folder: Path, max_step: int) -> list[dict]:
    """The run's evaluations at steps 1..max_step (the last record per step): {step, samples, loss, token_error}."""
    path = folder / "progress.jsonl"
    if not path.is_file():
        raise SystemExit(f"{path}: not found (expected an app/align run's folder)")
    records = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SystemExit(f"{path}:{number}: not JSON ({exc})") from None
        if "eval" in r and 0 < r["step"] <= max_step and not r.get("evaluate_only"):
            records[r["step"]] = {"step": r["step"], "samples": r["rows"],
                                  "loss": float(np.mean([r["eval"][v]["ctc_loss"] for v in VOICES])),
                                  "token_error": float(np.mean([r["eval"][v]["token_error"] for v in VOICES]))}
    if not records:
        raise SystemExit(f"{path}: no evaluation between steps 1 and {max_step}")
    return [records[k] for k in sorted(records)]


def until_lowest(records: list[dict]) -> list[dict]:
    """A run's evaluations up to (and with) its lowest held-out loss."""
    if not records:
        return []
    lowest = min(range(len(records)), key=lambda i: records[i]["loss"])
    return records[: lowest + 1]


def effective_rows(samples: np.ndarray, unique: np.ndarray, r_star: float) -> np.ndarray:
    """Muennighoff et al.'s effective data: samples while every row is fresh, then decaying worth per repetition."""
    samples, unique = np.asarray(samples, float), np.asarray(unique, float)
    extra = np.maximum(samples / unique - 1.0, 0.0)
    repeated = unique + unique * r_star * (1.0 - np.exp(-extra / r_star))
    return np.where(samples <= unique, samples, repeated)


def fit(samples, unique, loss) -> dict:
    """Least squares over a grid of (alpha, R*), E and A solved exactly for each (E >= 0, A >= 0), then a finer
    grid around the best pair."""
    best = _grid_fit(samples, unique, loss, np.linspace(0.05, 2.0, 196), np.geomspace(0.05, 200.0, 120))
    alpha, r_star = best["alpha"], best["R_star"]
    return _grid_fit(samples, unique, loss, np.linspace(max(0.01, alpha - 0.02), alpha + 0.02, 41),
                     np.geomspace(r_star / 1.2, r_star * 1.2, 41))


def _grid_fit(samples, unique, loss, alphas, r_stars) -> dict:
    loss = np.asarray(loss, float)
    best = None
    for r_star in r_stars:
        x = effective_rows(samples, unique, r_star)[None, :] ** -np.asarray(alphas, float)[:, None]  # (alphas, points)
        dx = x - x.mean(1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            a = (dx * (loss - loss.mean())).sum(1) / (dx * dx).sum(1)  # least squares, per alpha
        e = loss.mean() - a * x.mean(1)
        sse = ((e[:, None] + a[:, None] * x - loss) ** 2).sum(1)
        sse[~((e >= 0) & (a >= 0) & np.isfinite(sse))] = np.inf
        i = int(np.argmin(sse))
        if np.isfinite(sse[i]) and (best is None or sse[i] < best["sse"]):
            best = {"E": float(e[i]), "A": float(a[i]), "alpha": float(alphas[i]), "R_star": float(r_star), "sse": float(sse[i])}
    if best is None:
        raise SystemExit("no fit with a non-negative irreducible term and amplitude")
    best["rmse"] = math.sqrt(best["sse"] / len(loss))
    return best


def bootstrap(samples, unique, loss, resamples: int, seed: int = 0) -> dict:
    """90 % intervals of the fitted parameters over resamplings of the points (with replacement)."""
    rng = np.random.default_rng(seed)
    fits = []
    for _ in range(resamples):
        pick = rng.integers(0, len(loss), len(loss))
        try:
            fits.append(fit(samples[pick], unique[pick], loss[pick]))
        except SystemExit:
            continue
    return {k: [round(float(np.percentile([f[k] for f in fits], q)), 4) for q in (5, 95)] for k in ("E", "alpha", "R_star")}


def predict(params: dict, samples, unique) -> np.ndarray:
    return params["E"] + params["A"] * effective_rows(samples, unique, params["R_star"]) ** -params["alpha"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", action="append", required=True, help="NAME=FOLDER: 'fresh' or the run's --unique-rows")
    p.add_argument("--min-step", type=int, default=200)
    p.add_argument("--bootstrap", type=int, default=500, help="resamplings of the points for the parameters' intervals")
    p.add_argument("--max-step", type=int, default=600)
    p.add_argument("--out", required=True, help="the plot (.png); the fit is written beside it (.json)")
    args = p.parse_args(argv)
    runs = {}
    for spec in args.run:
        name, _, folder = spec.partition("=")
        if not folder or not (name == "fresh" or name.isdigit()):
            raise SystemExit(f"--run {spec!r}: expected NAME=FOLDER, NAME 'fresh' or the run's --unique-rows (a number)")
        runs[name] = read_run(Path(folder), args.max_step)
    unique_of = {name: (math.inf if name == "fresh" else float(name)) for name in runs}
    fitted = {name: [r for r in rs if r["step"] >= args.min_step] for name, rs in runs.items()}
    fitted = {name: rs if name == "fresh" else until_lowest(rs) for name, rs in fitted.items()}  # fresh rows: no overfitting
    points = [(name, r) for name, rs in fitted.items() for r in rs]
    samples = np.array([r["samples"] for _, r in points], float)
    unique = np.array([min(unique_of[n], 1e12) for n, _ in points], float)
    loss = np.array([r["loss"] for _, r in points], float)
    params = fit(samples, unique, loss)
    params["interval_90"] = bootstrap(samples, unique, loss, args.bootstrap)
    held = {}
    for name in runs:
        if name == "fresh":
            continue
        keep = np.array([n != name for n, _ in points])
        sub = fit(samples[keep], unique[keep], loss[keep])
        guess = predict(sub, samples[~keep], unique[~keep])
        held[name] = {"fit_without": sub, "rmse_predicting_it": float(np.sqrt(np.mean((guess - loss[~keep]) ** 2)))}
    result = {"runs": runs, "fitted_steps": {n: [r["step"] for r in rs] for n, rs in fitted.items()}, "fit": params,
              "leave_one_out": held, "min_step": args.min_step, "max_step": args.max_step, "measure":
              "held-out CTC loss per token, mean of joe and espeak"}
    print(json.dumps({"fit": params, "leave_one_out": {k: v["rmse_predicting_it"] for k, v in held.items()}}, indent=1))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, rs in runs.items():
        label = "fresh rows" if name == "fresh" else f"{int(unique_of[name]):,} rows repeated"
        s = np.array([r["samples"] for r in rs], float)
        used = {r["step"] for r in fitted[name]}
        (line,) = left.plot([r["samples"] for r in rs if r["step"] in used], [r["loss"] for r in rs if r["step"] in used],
                            "o", label=label)
        left.plot([r["samples"] for r in rs if r["step"] not in used], [r["loss"] for r in rs if r["step"] not in used],
                  "o", mfc="none", color=line.get_color())
        start = min((r["samples"] for r in fitted[name]), default=s.min())
        grid = np.linspace(start, s.max(), 100)  # the fit's curve from the first fitted point
        left.plot(grid, predict(params, grid, np.full_like(grid, min(unique_of[name], 1e12))), "-", color=line.get_color())
        right.plot(s, [r["token_error"] for r in rs], "o-", color=line.get_color(), label=label)
    left.axhline(params["E"], color="grey", ls=":", label=f"fitted E = {params['E']:.2f}")
    left.set(xlabel="training samples seen (open: not fitted)", ylabel="held-out CTC loss per token (joe, espeak mean)",
             title=f"fit: E + A·D^-{params['alpha']:.2f}, R* = {params['R_star']:.1f}")
    right.set(xlabel="training samples seen", ylabel="held-out token error (mean)", title="token error")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(args.out)
    fig.savefig(out, dpi=110)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    print(out, out.with_suffix(".json"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
