"""Word error rate: word-level Levenshtein distance on normalized text (no external metric package)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

_NON_WORD = re.compile(r"[^a-z0-9]+")


def normalize_text(text: str) -> list[str]:
    """Lowercase, NFKC, drop apostrophes, treat every other non-alphanumeric run as a word break."""
    text = unicodedata.normalize("NFKC", text or "").lower().replace("\u2019", "'").replace("'", "")
    return _NON_WORD.sub(" ", text).split()


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Minimum substitutions + deletions + insertions turning ``ref`` into ``hyp`` (O(len(ref)*len(hyp)))."""
    if not ref:
        return len(hyp)
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def wer_counts(reference: str, hypothesis: str) -> tuple[int, int]:
    """(word edits, reference words) after normalization."""
    ref, hyp = normalize_text(reference), normalize_text(hypothesis)
    return edit_distance(ref, hyp), len(ref)


def word_error_rate(references: Sequence[str] | str, hypotheses: Sequence[str] | str) -> float:
    """Corpus WER: total word edits / total reference words (a single pair may be given as two strings)."""
    if isinstance(references, str):
        references, hypotheses = [references], [hypotheses]
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses.")
    edits = words = 0
    for r, h in zip(references, hypotheses):
        e, n = wer_counts(r, h)
        edits, words = edits + e, words + n
    if words == 0:
        raise ValueError("the references hold no words.")
    return edits / words


__all__ = ["normalize_text", "edit_distance", "wer_counts", "word_error_rate"]
