"""The hearing margin (metrics/hearing.py) and its place in the benchmark's metrics: a constant answer scores 0
whatever its ROUGE; answers that follow their own input score above 0."""

from __future__ import annotations

import pytest

from audio_minichat.metrics.hearing import hearing_margin

TARGETS = ["The council approved a new library in the town centre.",
           "Heavy rain flooded the main road near the river on Monday.",
           "The football club signed a young striker from Brazil.",
           "Scientists found a new species of frog in the rainforest."]


def overlap(preds, refs):
    """Word-overlap F1 x100 (a plain pairwise score for the unit test)."""
    out = []
    for p, r in zip(preds, refs):
        a, b = set(p.lower().split()), set(r.lower().split())
        common = len(a & b)
        out.append(0.0 if not common else 100 * 2 * common / (len(a) + len(b)))
    return out


def test_constant_answer_has_zero_margin_whatever_its_score():
    generic = "The town council said the new plan would help the people of the area."
    m = hearing_margin([generic] * len(TARGETS), TARGETS, overlap)
    assert m["own"] > 0  # it shares words with the targets: a score against references alone would reward it
    assert m["margin"] == pytest.approx(0.0, abs=1e-9)
    assert m["n"] == 4 and sum(m["per_item"]) == pytest.approx(0.0, abs=1e-9)  # per item it varies; the mean is 0


def test_answers_that_follow_their_input_have_a_margin():
    answers = [t.replace("The ", "A ") for t in TARGETS]
    m = hearing_margin(answers, TARGETS, overlap)
    assert m["margin"] > 50 and m["own"] > m["others"]
    # a mismatched pairing (each answer given the next item's target) loses the margin: below zero
    shifted = hearing_margin(answers, TARGETS[1:] + TARGETS[:1], overlap)
    assert shifted["margin"] < 0


def test_hearing_margin_checks_its_input():
    with pytest.raises(ValueError, match="needs at least two items"):
        hearing_margin(["a"], ["a"], overlap)
    with pytest.raises(ValueError, match="2 answers but 3 targets"):
        hearing_margin(["a", "b"], ["a", "b", "c"], overlap)


def test_benchmark_rows_carry_the_margins():
    """compute_metrics (the benchmark, and --rescore) with the real local ROUGE module: a system that copies the
    text system's summaries has a large vs-text margin; one that writes a fixed sentence has ~0 on both."""
    from audio_minichat.eval.benchmark import compute_metrics, load_rouge

    docs = {str(i): {"id": str(i), "summary": t, "document": t} for i, t in enumerate(TARGETS)}
    records = []
    for i, t in enumerate(TARGETS):
        base = {"id": str(i), "latency_s": 1.0, "timings": {}, "peak_rss_mb": 1.0, "audio_seconds": 2.0}
        records.append({**base, "system": "text", "voice": "-", "output": t, "transcript": None})
        records.append({**base, "system": "cascade", "voice": "joe", "output": t, "transcript": t})
        records.append({**base, "system": "e2e", "voice": "joe", "output": "The people of the town said it.",
                        "transcript": None})
    rows = {r["system"]: r for r in compute_metrics(records, docs, load_rouge())}
    assert rows["text"]["rouge1_margin"] > 50 and rows["text"]["rougeL_vs_text_margin"] is None
    assert rows["cascade"]["rougeL_vs_text_margin"] > 50
    assert rows["e2e"]["rouge1_margin"] == pytest.approx(0.0, abs=1e-6)
    assert rows["e2e"]["rougeL_vs_text_margin"] == pytest.approx(0.0, abs=1e-6)
    assert rows["e2e"]["rougeL_vs_text"] > 0  # ROUGE alone does not see that it ignores its input
