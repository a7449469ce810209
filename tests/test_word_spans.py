"""Word spans for audio_frontend="ctc_pool": the data builder's span stage (Whisper forced alignment, greedy CTC),
the collator passing them as audio_spans, and a tiny ctc_pool model training on them (offline, CPU)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import encoder_config, make_model, speechlike
from test_prepare_data import needs_espeak, teacher_dir, tiny_config  # noqa: F401  (teacher_dir: a fixture)
from transformers import TrainingArguments

from audio_minichat.dataprep import word_spans as ws
from audio_minichat.dataprep.build import build
from audio_minichat.dataprep.config import load_config
from audio_minichat.dataprep.shards import KILL_ENV
from audio_minichat.dataprep.tts import engine_available
from audio_minichat.training import (DataConfig, DistillationCollator, DistillationTrainer, LossConfig, TrainableConfig,
                                     configure_trainable)
from audio_minichat.training.cli import load_rows

ESPEAK_US = {"engine": "espeak-ng", "name": "en-us", "variant": "m3", "rate": 1.0, "pitch": 50}


def all_rows(out: Path) -> list[dict]:
    from datasets import load_from_disk

    dd = load_from_disk(str(out))
    return [r for split in ("train", "validation") for r in dd[split].select_columns(
        [c for c in dd[split].column_names if c != "audio"])]


def tree_digest(root: Path, exclude=("report.json",)) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name not in exclude}


def close(spans, expected) -> None:
    assert np.shape(spans) == np.shape(expected), spans
    np.testing.assert_allclose(spans, expected, atol=1e-9)


def spoken_words(text: str) -> int:
    return sum(any(ch.isalnum() for ch in w) for w in text.split())


# ------------------------------------------------------------------------------------------------ arithmetic


def test_ctc_word_spans_on_known_frames():
    blank, delim, bos = 0, 4, 2
    # frames: _ _ a a _ b | | c _ c d | _ _ e     (spf 20 ms)
    ids = [blank, blank, 5, 5, blank, 6, delim, delim, 7, blank, 7, 8, delim, blank, blank, 9]
    close(ws.ctc_word_spans(ids, blank, delim, 0.02), [[0.04, 0.12], [0.16, 0.24], [0.30, 0.32]])
    # leading/trailing delimiters and blanks add nothing; an ignored token neither starts nor ends a word
    assert ws.ctc_word_spans([delim, bos, 5, bos, 5, delim, blank], blank, delim, 0.5, ignore_ids=[bos]) == [[1.0, 2.5]]
    assert ws.ctc_word_spans([blank, delim, blank, delim], blank, delim, 0.02) == []
    # greedy decoding of logits built to be those frames
    logits = torch.full((len(ids), 10), -3.0) + 0.1 * torch.randn(len(ids), 10, generator=torch.Generator().manual_seed(0))
    logits[torch.arange(len(ids)), torch.tensor(ids)] = 4.0
    assert ws.CtcWordAligner.frame_ids(logits) == ids
    spans, reason, _ = ws.finish_spans(ws.ctc_word_spans(ids, blank, delim, 0.02), duration=0.315)
    assert reason is None and spans == [[0.04, 0.12], [0.16, 0.24], [0.3, 0.315]]  # clipped to the clip


def test_dtw_path_and_median_filter():
    cost = np.array([[0, 1, 1, 1], [1, 0, 0, 1], [1, 1, 1, 0.0]])
    rows, cols = ws.dtw_path(cost)
    assert list(zip(rows.tolist(), cols.tolist())) == [(0, 0), (1, 1), (1, 2), (2, 3)]
    rows, cols = ws.dtw_path(np.zeros((3, 1)))  # more rows than columns: straight down
    assert rows.tolist() == [0, 1, 2] and cols.tolist() == [0, 0, 0]
    x = np.array([[1.0, 5, 2, 9, 3]])  # edges reflected: 5 1 5 2 9 3 9
    assert ws.median_filter(x, 3).tolist() == [[5, 2, 5, 3, 9]]
    assert ws.median_filter(x[:, :3], 7).tolist() == [[1, 5, 2]]  # too short to filter


def test_boundaries_fallbacks_and_checks():
    # zero-width words are pushed apart by one frame and stay inside the clip
    b = ws.spread_boundaries([0.0, 0.4, 0.4, 0.4, 1.2], duration=1.0)
    assert b == pytest.approx([0.0, 0.4, 0.42, 0.44, 1.0])
    assert ws.spread_boundaries([0.0, 0.99, 0.99, 1.0], duration=1.0) == pytest.approx([0.0, 0.96, 0.98, 1.0])
    assert ws.spread_boundaries([0.0] * 60, duration=1.0) is None  # 59 words cannot fit in 1 s at 20 ms each
    loud = np.array([0, 0, 1, 1, 0, 0, 1, 0, 0], dtype=bool)
    close(ws.trim_silence([[0.0, 0.1], [0.1, 0.18]], loud), [[0.04, 0.08], [0.12, 0.14]])
    assert ws.trim_silence([[0.0, 0.04]], loud) == [[0.0, 0.04]]  # nothing loud: unchanged
    # rounding to ms, clipping, and the whole-clip fallback with its reason
    assert ws.finish_spans([[0.00012, 0.5004], [0.5004, 0.99]], 0.9876)[:2] == ([[0.0, 0.5], [0.5, 0.987]], None)
    assert ws.finish_spans("too_long_for_whisper", 31.25)[:2] == ([[0.0, 31.25]], "too_long_for_whisper")
    assert ws.finish_spans([], 2.0)[:2] == ([[0.0, 2.0]], "no_words")
    spans, reason, detail = ws.finish_spans([[0.5, 0.9], [0.2, 0.6]], 2.0)
    assert (spans, reason) == ([[0.0, 2.0]], "invalid_spans") and "before the previous" in detail
    assert ws.check_spans([[0.0, 0.3], [0.3, 0.5]], 0.5) is None
    assert "outside the clip" in ws.check_spans([[0.0, 0.6]], 0.5)
    assert "empty" in ws.check_spans([[0.2, 0.2]], 0.5)
    assert "pair" in ws.check_spans([[0.1, 0.2, 0.3]], 0.5)
    assert "non-finite" in ws.check_spans([[0.1, float("nan")]], 0.5)
    assert "non-empty list" in ws.check_spans([], 0.5)
    assert ws.check_spans([[0.2, 0.4], [0.1, 0.3]], 0.5, ordered=False) is None


def test_span_config(tmp_path):
    assert ws.span_config(None) is None and ws.span_config("off") is None
    assert ws.span_config("whisper") == {"source": "whisper", "model": "whisper-tiny.en", "batch_size": 8,
                                         "threads": None, "device": "cpu"}
    assert ws.span_config({"source": "ctc", "model": "/m", "batch_size": 2})["model"] == "/m"
    with pytest.raises(ValueError, match="needs word_spans.model"):
        ws.span_config("ctc")
    with pytest.raises(ValueError, match="source must be one of"):
        ws.span_config({"source": "mfa"})
    with pytest.raises(ValueError, match="unknown word_spans keys"):
        ws.span_config({"source": "whisper", "heads": [1]})
    assert load_config(None)["word_spans"] is None
    assert ws.spans_key(ws.span_config("whisper")) == ws.spans_key({**ws.span_config("whisper"), "threads": 2})
    (tmp_path / "data.yaml").write_text("num: 3\nword_spans: {source: ctc, model: /nowhere}\n")
    assert load_config(str(tmp_path / "data.yaml"))["word_spans"] == {"source": "ctc", "model": "/nowhere"}
    with pytest.raises(ValueError, match="needs word_spans.model"):  # a bad span config stops the build first
        build(tiny_config(tmp_path / "out", "unused", word_spans={"source": "ctc"}))
    assert not (tmp_path / "out" / "plan.jsonl").exists()


# ------------------------------------------------------------------------------------------------ aligners


@pytest.fixture(scope="module")
def whisper_aligner():
    return ws.WhisperWordAligner(ws.span_config({"source": "whisper", "threads": 1}))


def _words_with_pauses(words: list[str], pause_s: float = 0.08):
    """espeak-ng says each word alone; joined with pauses they have known positions."""
    from audio_minichat.dataprep.tts import Voice, synthesize

    voice = Voice.from_dict(ESPEAK_US)
    parts, truth, t = [np.zeros(1600, np.float32)], [], 0.1
    for word in words:
        audio = synthesize(word, voice)
        loud = np.nonzero(ws.loud_frames(audio, 16000))[0]
        audio = audio[loud[0] * 320:(loud[-1] + 1) * 320]
        truth.append((t, t + audio.size / 16000))
        parts += [audio, np.zeros(int(pause_s * 16000), np.float32)]
        t += audio.size / 16000 + pause_s
    return np.concatenate(parts), truth


@needs_espeak
def test_whisper_forced_alignment_finds_the_words(whisper_aligner):
    from audio_minichat.dataprep.tts import Voice, synthesize

    text = "We walked along the river until the sun went down behind the hills."
    audio, truth = _words_with_pauses(text.split())
    sentence = synthesize("Bring a warm coat - because it will be cold by the coast.", Voice.from_dict(ESPEAK_US))
    got = whisper_aligner([(audio, text), (sentence, "Bring a warm coat - because it will be cold by the coast."),
                           (np.zeros(16000 * 31, np.float32), "too long"), (sentence, "... !")])
    assert got[2:] == ["too_long_for_whisper", "no_words"]
    for spans, clip, n_words in ((got[0], audio, 13), (got[1], sentence, 12)):  # "-" joins "coat"
        assert len(spans) == n_words
        assert ws.check_spans(spans, clip.size / 16000) is None  # ordered, non-empty, inside the clip
    centred = sum(a <= (s + e) / 2 <= b for (s, e), (a, b) in zip(got[0], truth))
    assert centred >= 10, list(zip(got[0], truth))  # 12 of 13 at the time of writing
    starts = np.array([s for s, _ in got[0]]) - np.array([a for a, _ in truth])
    assert np.abs(starts).mean() < 0.15


def test_ctc_aligner_on_a_tiny_random_model(tmp_path):
    from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

    vocab = ["<pad>", "<s>", "</s>", "<unk>", "|", *"abcdefghijklmnopqrstuvwxyz", "'"]
    (tmp_path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    tok = Wav2Vec2CTCTokenizer(str(tmp_path / "vocab.json"), word_delimiter_token="|")
    cfg = encoder_config("wav2vec2")
    cfg.vocab_size, cfg.pad_token_id = len(vocab), 0
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(cfg).eval()
    with torch.no_grad():  # every frame says "a": one word over every frame
        model.lm_head.weight.zero_()
        model.lm_head.bias.zero_()
        model.lm_head.bias[vocab.index("a")] = 1.0
    for obj in (model, tok, Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)):
        obj.save_pretrained(tmp_path / "ctc")
    aligner = ws.make_aligner(ws.span_config({"source": "ctc", "model": str(tmp_path / "ctc")}))
    assert (aligner.blank, aligner.delimiter, aligner.seconds_per_frame) == (0, 4, 80 / 16000)  # strides 5*4*4
    clip = speechlike(1.0)
    frames = int(model._get_feat_extract_output_lengths(torch.tensor(clip.size)))
    (spans,) = aligner([(clip, "ignored")])
    close(spans, [[0.0, frames * 80 / 16000]])
    with pytest.raises(FileNotFoundError, match="not a directory"):
        ws.make_aligner(ws.span_config({"source": "ctc", "model": str(tmp_path / "missing")}))
    with torch.no_grad():  # every frame says "|": no word, the whole clip
        model.lm_head.bias.zero_()
        model.lm_head.bias[4] = 1.0
    model.save_pretrained(tmp_path / "ctc")
    aligner = ws.make_aligner(ws.span_config({"source": "ctc", "model": str(tmp_path / "ctc")}))
    assert aligner([(clip, "x")]) == ["no_words"]


# ------------------------------------------------------------------------------------------------ builds


@pytest.fixture(scope="module")
def spans_build(tmp_path_factory, teacher_dir):  # noqa: F811
    """One tiny build three times: word spans off, then on (whisper), then off again."""
    if not engine_available("espeak-ng"):
        pytest.skip("espeak-ng not installed")
    out = tmp_path_factory.mktemp("spans") / "out"
    cfg = tiny_config(out, teacher_dir)
    build(cfg)
    off = tree_digest(out)
    rep = build({**cfg, "word_spans": {"source": "whisper", "threads": 1}})
    on = tree_digest(out)
    rows = all_rows(out)
    with_spans = out.parent / "with_spans"
    shutil.copytree(out, with_spans)
    build(cfg)
    return {"out": out, "with_spans": with_spans, "cfg": cfg, "off": off, "on": on, "off_again": tree_digest(out),
            "report": rep, "rows": rows}


def test_build_writes_checked_word_spans(spans_build):
    rows, rep = spans_build["rows"], spans_build["report"]
    assert len(rows) == 8
    for row in rows:
        spans = row["word_spans"]
        assert ws.check_spans(spans, row["duration"] + 0.001) is None, (row["id"], spans)
        assert len(spans) == spoken_words(row["transcript"]), (row["transcript"], spans)
    summary = rep["word_spans"]
    assert summary["rows"] == 8 and summary["spans"] == sum(len(r["word_spans"]) for r in rows)
    assert summary["whole_clip"] == 0 and summary["whole_clip_reasons"] == {}
    assert rep["timings"]["word_spans_s"] > 0


def test_word_spans_off_leaves_the_build_as_it_was(spans_build):
    off, on, again = spans_build["off"], spans_build["on"], spans_build["off_again"]
    # turned off again: all but the (kept) spans stages is byte-identical to the first build's
    assert {k: v for k, v in again.items() if "/spans/" not in k} == off
    stages = {k: v for k, v in off.items() if k.startswith("shards/")}
    assert {k: on[k] for k in stages} == stages  # spans on: synthesis and teacher stages untouched
    assert any("/spans/" in k for k in on) and not any("/spans/" in k for k in off)
    assert "word_spans" not in json.loads((spans_build["out"] / "report.json").read_text())


def test_spans_stage_resumes_and_redoes_another_config(spans_build, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(spans_build["out"], out)
    cfg = {**spans_build["cfg"], "out": str(out), "word_spans": {"source": "whisper", "threads": 1}}
    before = {k: v for k, v in tree_digest(out).items() if "/spans/" in k}
    rep = build(cfg)  # every spans stage is there: nothing to compute
    assert rep["timings"]["word_spans_s"] == 0.0
    meta = out / "shards" / "shard-00001" / "spans" / "meta.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "key": "another-config"}))
    rep = build(cfg)  # that shard's stage was written under another config: redone, the same spans
    assert rep["timings"]["word_spans_s"] > 0
    assert {k: v for k, v in tree_digest(out).items() if "/spans/" in k} == before


@needs_espeak
def test_killed_spans_stage_resumes(tmp_path, teacher_dir):  # noqa: F811
    out = tmp_path / "out"
    cfg = tiny_config(out, teacher_dir, num=4, shard_size=2, validation_fraction=0.25,
                      word_spans={"source": "whisper", "threads": 1})
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "TQDM_DISABLE": "1", KILL_ENV: "before-commit:4"}  # 2 synth, 1 spans, dies in the 2nd
    cmd = [sys.executable, "-m", "audio_minichat.dataprep", "--config", str(cfg_path)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 17, r.stderr[-2000:]
    assert len(list(out.glob("shards/*/spans"))) == 1 and list(out.glob("shards/*/.spans.*.tmp*"))
    rep = build(load_config(str(cfg_path)))  # the rerun: stale temporaries cleared, the missing stage done
    assert rep["word_spans"]["rows"] == 4 and not list(out.rglob(".*.tmp*"))
    rows = all_rows(out)
    assert len(rows) == 4 and len({r["id"] for r in rows}) == 4
    assert all(len(r["word_spans"]) == spoken_words(r["transcript"]) for r in rows)


def test_ctc_build_counts_whole_clip_fallbacks(tmp_path, teacher_dir):  # noqa: F811
    """An HF-style audio folder through a CTC span source that never hears a word: every row gets one span
    over its whole clip, and report.json says so."""
    import soundfile as sf
    from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

    (tmp_path / "vocab.json").write_text(json.dumps({"<pad>": 0, "|": 1, "a": 2, "b": 3}))
    cfg = encoder_config("wav2vec2")
    cfg.vocab_size, cfg.pad_token_id = 4, 0
    model = Wav2Vec2ForCTC(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.lm_head.bias.copy_(torch.tensor([1.0, 0, 0, 0]))  # always blank
    for obj in (model, Wav2Vec2CTCTokenizer(str(tmp_path / "vocab.json")), Wav2Vec2FeatureExtractor()):
        obj.save_pretrained(tmp_path / "ctc")
    folder = tmp_path / "af"
    folder.mkdir()
    lines = ["file_name,text"]
    for i in range(3):
        sf.write(folder / f"u{i}.wav", speechlike(0.8 + 0.3 * i, seed=i), 16000)
        lines.append(f"u{i}.wav,hello world number {i}")
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    rep = build(tiny_config(out, teacher_dir, num=None, workers=1,
                            hf_dataset={"name": str(folder), "text_column": "text"},
                            word_spans={"source": "ctc", "model": str(tmp_path / "ctc")}))
    assert rep["word_spans"]["whole_clip"] == 3 and rep["word_spans"]["whole_clip_reasons"] == {"no_words": 3}
    rows = all_rows(out)
    assert sorted(r["word_spans"][0][1] for r in rows) == [0.8, 1.1, 1.4]
    assert all(len(r["word_spans"]) == 1 and r["word_spans"][0][0] == 0.0 for r in rows)


# ------------------------------------------------------------------------------------------------ training


def span_rows(n=4):
    texts = ["hello world", "the sound of water", "what time is it", "one two three"]
    out = []
    for i in range(n):
        seconds = 0.6 + 0.2 * i
        words = texts[i % 4].split()
        edges = np.linspace(0.0, seconds, len(words) + 1)
        out.append({"audio": {"array": speechlike(seconds, seed=i), "sampling_rate": 16000}, "transcript": texts[i % 4],
                    "prompt": "summarize <|audio|>" if i % 2 else "<|audio|>", "response": texts[(i + 1) % 4],
                    "word_spans": [[round(a, 3), round(b, 3)] for a, b in zip(edges[:-1], edges[1:])]})
    return out


def test_collator_passes_word_spans_to_a_ctc_pool_model():
    _, proc = make_model("whisper", audio_frontend="ctc_pool")
    collator = DistillationCollator(proc, DataConfig())
    data = span_rows(3)
    batch = collator(data)
    assert batch["audio_spans"].shape == (3, 4, 2)  # the longest row has 4 words
    assert (batch["audio_spans"][0, 2:] == -1).all()  # padding after row 0's 2 spans
    n_audio = (batch["input_ids"] == proc.audio_token_id).sum(dim=1).tolist()
    assert n_audio == [len(r["word_spans"]) for r in data]  # one audio embedding per word
    bad = span_rows(2)
    del bad[1]["word_spans"]
    with pytest.raises(KeyError, match=r"row 1: .*no 'word_spans'"):
        collator(bad)
    for spans, message in (([], "non-empty list"), ([[0.3, 0.1]], "empty or outside"), ([[0.0, 5.0]], "outside the clip"),
                           ([[0.1]], "pair"), ("0.1-0.2", "non-empty list")):
        bad = span_rows(2)
        bad[1]["word_spans"] = spans
        with pytest.raises(ValueError, match=rf"row 1: bad 'word_spans' .*{message}"):
            collator(bad)
    # another column name; a model that does not pool over spans ignores the column
    renamed = [{**{k: v for k, v in r.items() if k != "word_spans"}, "spans": r["word_spans"]} for r in span_rows(2)]
    assert collator.__class__(proc, DataConfig(spans_column="spans"))(renamed)["audio_spans"].shape == (2, 4, 2)
    _, pool_proc = make_model("whisper")
    assert "audio_spans" not in DistillationCollator(pool_proc, DataConfig())(span_rows(2))


def test_ctc_pool_model_trains_on_built_word_spans(spans_build, tmp_path):
    """From the builder's data set (word_spans from Whisper) to two training steps of a tiny ctc_pool model."""
    model, proc = make_model("whisper", audio_frontend="ctc_pool")
    configure_trainable(model, TrainableConfig())
    before = {n: p.detach().clone() for n, p in model.named_parameters() if n.startswith("audio_frontend.projector.")}
    assert before
    args = TrainingArguments(output_dir=str(tmp_path / "run"), per_device_train_batch_size=3, learning_rate=1e-2,
                             max_steps=2, report_to=[], remove_unused_columns=False, save_strategy="no", logging_steps=1,
                             seed=0, lr_scheduler_type="constant", optim="sgd", dataloader_num_workers=0, use_cpu=True)
    trainer = DistillationTrainer(model=model, args=args, train_dataset=load_rows(str(spans_build["with_spans"]), "train", None),
                                  data_collator=DistillationCollator(proc, DataConfig()),
                                  loss_config=LossConfig(feature_layers=[-1]))
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    after = dict(model.named_parameters())
    assert any(not torch.equal(before[n], after[n]) for n in before)
    # validation (perplexities and sample generations) reads the spans too
    from audio_minichat.training import ValidationCallback

    rows = load_rows(str(spans_build["with_spans"]), "train", 2)
    callback = ValidationCallback(trainer, [rows[i] for i in range(len(rows))], trainer.data_collator, 1)
    callback.on_evaluate(trainer.args, trainer.state, trainer.control)
    logged = [h for h in trainer.state.log_history if "eval_ppl_audio" in h]
    assert logged and math.isfinite(logged[-1]["eval_ppl_audio"])
