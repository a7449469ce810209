"""The hearing margin: does an answer follow *its own* input, or only the prior?

A route that ignores the audio writes the same fluent, on-topic-for-the-genre answer whatever was said; such an
answer scores well on ROUGE against references and on perplexity, so neither can tell hearing from the prior. The
margin can: score each answer against its own item's target (the reference summary, or the same LLM's answer to
the same words as text) and against the other items' targets; the margin is the mean own score minus the mean
score against the others. A constant answer has margin 0 by construction; the text system sets the ceiling.

``score(predictions, references) -> list[float]`` is any pairwise metric (e.g. ROUGE-L F1 x100); it is called once
with all n x n pairs.
"""

from __future__ import annotations

from typing import Callable, Sequence

Score = Callable[[list[str], list[str]], Sequence[float]]


def hearing_margin(answers: Sequence[str], targets: Sequence[str], score: Score) -> dict:
    """``answers[i]`` belongs to ``targets[i]``. Returns ``own`` (mean score against its own target), ``others``
    (mean over answers of the mean score against the other targets), ``margin`` (own - others), ``n``, and
    ``per_item`` (own - others for each answer). Needs at least two items."""
    n = len(answers)
    if n != len(targets):
        raise ValueError(f"hearing_margin: {n} answers but {len(targets)} targets")
    if n < 2:
        raise ValueError("hearing_margin: needs at least two items (the others are the control)")
    preds = [a for a in answers for _ in range(n)]
    refs = [t for _ in range(n) for t in targets]
    flat = [float(v) for v in score(preds, refs)]
    if len(flat) != n * n:
        raise ValueError(f"hearing_margin: the score returned {len(flat)} values for {n * n} pairs")
    per_item, own, others = [], [], []
    for i in range(n):
        row = flat[i * n:(i + 1) * n]
        o = row[i]
        rest = (sum(row) - o) / (n - 1)
        own.append(o)
        others.append(rest)
        per_item.append(o - rest)
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    return {"own": mean(own), "others": mean(others), "margin": mean(own) - mean(others), "n": n, "per_item": per_item}


def rouge_pairs(rouge, key: str) -> Score:
    """A pairwise ``Score`` from an ``evaluate`` ROUGE module: F1 x100 of ``key`` (rouge1, rougeL, ...), stemmed."""
    def score(preds, refs):
        out = rouge.compute(predictions=preds, references=refs, use_stemmer=True, rouge_types=[key], use_aggregator=False)
        return [100 * v for v in out[key]]
    return score


__all__ = ["hearing_margin", "rouge_pairs"]
