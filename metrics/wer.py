"""Word error rate: word-level Levenshtein distance on normalized text, comparable with published figures.

By default both sides are normalized with Whisper's English text normalizer (``transformers``'
``EnglishTextNormalizer``, the one Whisper's and most published English WER figures use): lowercase, no
punctuation or bracketed asides ("[Music]", "(laughs)"), spelled-out numbers as digits ("Twenty dollars." and
"20 dollars" are both "$20"), contractions and titles expanded ("it's" -> "it is", "Mr." -> "mister"),
fillers dropped ("um", "hmm"), British spellings made American ("colour" -> "color"). The spelling mapping
(Hugging Face's ``normalizer.json``; the offline Whisper checkpoints carry none) ships with this module as
``whisper_english_spelling.json``, so the metric works offline.

``normalizer="simple"`` keeps the earlier, stricter normalization (lowercase, NFKC, apostrophes dropped, every
other non-alphanumeric run a word break; numbers and spellings left as written).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

SPELLING_FILE = Path(__file__).resolve().parent / "whisper_english_spelling.json"
DEFAULT_NORMALIZER = "whisper"

_NON_WORD = re.compile(r"[^a-z0-9]+")


def simple_normalize(text: str) -> list[str]:
    """Lowercase, NFKC, drop apostrophes, treat every other non-alphanumeric run as a word break."""
    text = unicodedata.normalize("NFKC", text or "").lower().replace("\u2019", "'").replace("'", "")
    return _NON_WORD.sub(" ", text).split()


@lru_cache(maxsize=1)
def english_spelling_mapping() -> dict[str, str]:
    """Whisper's British -> American spelling mapping (1,739 words), from the file shipped with this module."""
    return dict(json.loads(SPELLING_FILE.read_text(encoding="utf-8"))["mapping"])


@lru_cache(maxsize=1)
def _whisper_normalizer():
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    return EnglishTextNormalizer(english_spelling_mapping())


def whisper_normalize(text: str) -> list[str]:
    """The words of ``text`` after Whisper's English text normalizer (see the module docstring)."""
    return _whisper_normalizer()(text or "").split()


NORMALIZERS: dict[str, Callable[[str], list[str]]] = {"whisper": whisper_normalize, "simple": simple_normalize}


def _normalizer(name: str) -> Callable[[str], list[str]]:
    if name not in NORMALIZERS:
        raise ValueError(f"unknown WER normalizer {name!r}; choose from {sorted(NORMALIZERS)}")
    return NORMALIZERS[name]


def normalize_text(text: str, normalizer: str = DEFAULT_NORMALIZER) -> list[str]:
    """The words WER compares: ``text`` under ``normalizer`` ("whisper", the default, or "simple")."""
    return _normalizer(normalizer)(text)


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


def wer_counts(reference: str, hypothesis: str, normalizer: str = DEFAULT_NORMALIZER) -> tuple[int, int]:
    """(word edits, reference words) after normalization."""
    norm = _normalizer(normalizer)
    ref, hyp = norm(reference), norm(hypothesis)
    return edit_distance(ref, hyp), len(ref)


def word_error_rate(references: Sequence[str] | str, hypotheses: Sequence[str] | str,
                    normalizer: str = DEFAULT_NORMALIZER) -> float:
    """Corpus WER: total word edits / total reference words (a single pair may be given as two strings).

    ``normalizer``: "whisper" (default: Whisper's English text normalizer, as published WER figures use) or
    "simple" (lowercase, punctuation removed, nothing else).
    """
    if isinstance(references, str):
        references, hypotheses = [references], [hypotheses]
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses.")
    edits = words = 0
    for r, h in zip(references, hypotheses):
        e, n = wer_counts(r, h, normalizer)
        edits, words = edits + e, words + n
    if words == 0:
        raise ValueError("the references hold no words.")
    return edits / words


__all__ = [
    "DEFAULT_NORMALIZER", "NORMALIZERS", "edit_distance", "english_spelling_mapping", "normalize_text",
    "simple_normalize", "wer_counts", "whisper_normalize", "word_error_rate",
]
