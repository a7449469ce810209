"""Loops in generated text: the share of outputs that repeat a word n-gram (default: a 4-gram 3 or more times)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

_WORD = re.compile(r"\w+(?:'\w+)?")


def repeats(text: str, n: int = 4, times: int = 3) -> bool:
    """Whether some n-gram of ``text``'s lowercased words occurs ``times`` times or more."""
    words = _WORD.findall(text.lower())
    counts = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return bool(counts) and max(counts.values()) >= times


def loop_rate(texts: Iterable[str], n: int = 4, times: int = 3) -> float:
    """Share of ``texts`` that :func:`repeats` (0.0 for none)."""
    texts = list(texts)
    return sum(repeats(t, n, times) for t in texts) / len(texts) if texts else 0.0


__all__ = ["repeats", "loop_rate"]
