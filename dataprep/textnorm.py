"""Text cleaning for the corpora: normalisation to speakable one-line English, sentence splitting and
grouping sentences into training units (single sentences and short passages), deterministic per document.

Used by :mod:`audio_minichat.dataprep.corpora` (the pool) and its sources and evaluation-overlap guard.
"""
from __future__ import annotations

import html
import random
import re
import unicodedata
import zlib
from typing import Sequence


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
