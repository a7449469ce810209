"""Tests for audio_minichat.dataprep: tiny corpus, espeak-ng voices, a tiny random teacher (offline, CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import soundfile as sf
import yaml

from audio_minichat.dataprep.build import build
from audio_minichat.dataprep.config import _merge, load_config
from audio_minichat.dataprep.plan import AUDIO_TOKEN, _voices, load_or_make_plan, make_prompt
from audio_minichat.dataprep.shards import KILL_ENV
from audio_minichat.dataprep.teacher import trim_repetition
from audio_minichat.dataprep.tts import engine_available

from conftest import make_model, speechlike

needs_espeak = pytest.mark.skipif(not engine_available("espeak-ng"), reason="espeak-ng not installed")

DOCS = [
    "The train leaves at nine in the morning. Bring a warm coat because it will be cold by the coast.",
    "We walked along the river until the sun went down behind the hills.",
    "My brother bought a new bicycle last week and he rides it to work every day.",
    "Please remember to water the plants on the balcony while I am away on holiday.",
    "The museum opens at ten and the tickets are cheaper for students and children.",
    "She wrote a long letter to her grandmother about the garden and the old apple tree.",
    "After lunch the children played football in the park until it started to rain.",
    "The library will close early on Friday because the staff are moving the old books.",
    "I like hot tea very much.",
    "See you at the station soon.",
    "The dog is asleep again.",
]
ESPEAK = [{"engine": "espeak-ng", "name": "en-us", "variant": "m3", "rate": 1.1, "pitch": 50},
          {"engine": "espeak-ng", "name": "en-gb", "variant": "f2", "rate": 1.2, "pitch": 60}]


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("teacher")
    model, processor = make_model("whisper", seed=0)
    # a random model would mostly emit special tokens (empty answers): zero their (tied) embedding rows so
    # greedy decoding picks ordinary words
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        for tok_id in processor.tokenizer.all_special_ids:
            if tok_id < emb.shape[0]:
                emb[tok_id] = 0
    model.save_pretrained(d)
    processor.save_pretrained(d)
    return str(d)


def tiny_config(out, teacher_dir, **over) -> dict:
    raw = {
        "out": str(out), "num": 8, "seed": 0, "validation_fraction": 0.25, "shard_size": 3, "workers": 2,
        "max_seconds": 30.0,
        "text": {"sources": [], "min_words": 5, "max_words": 30, "extra_documents": {"tiny": DOCS}},
        "voices": {"list": ESPEAK},
        "prompts": {"instruction_fraction": 0.5},
        "teacher": {"model": teacher_dir, "dtype": "float32", "batch_size": 4, "max_new_tokens_cap": 6,
                    "min_new_tokens": 2, "threads": 1},
    }
    return load_config(None, _merge(raw, over))


def plan_ids(out: Path) -> list[str]:
    return [json.loads(line)["id"] for line in (out / "plan.jsonl").read_text().splitlines()]


def final_ids(out: Path) -> list[str]:
    from datasets import load_from_disk

    dd = load_from_disk(str(out))
    return list(dd["train"]["id"]) + list(dd["validation"]["id"])


# ------------------------------------------------------------------------------------------------ unit


def test_trim_repetition():
    assert trim_repetition("Hello there. I am fine. I am fine. I am fine. I am") == "Hello there. I am fine."
    assert trim_repetition("Sure! no no no no no no") == "Sure! no"
    assert trim_repetition("It was good to see you and it was good to see you and it was") == "It was good to see you and"
    assert trim_repetition("a b a b a b a b") == "a b"
    # formatting before the loop is kept
    assert trim_repetition("Steps:\n1. Mix.\n2. Bake. Bake. Bake. Bake.") == "Steps:\n1. Mix.\n2. Bake."
    for clean in ("Plain answer with no loop at all.", "I really really like it.", "", "yes yes",
                  "The cat sat on the mat and the dog sat on the rug."):
        assert trim_repetition(clean) == clean


def test_trim_incomplete_sentence():
    from audio_minichat.dataprep.teacher import trim_incomplete_sentence as cut

    assert cut("It is a classic. It shows that those who are") == "It is a classic."
    assert cut('He said "stop." Then the') == 'He said "stop."'
    assert cut("No sentence end at all here") == "No sentence end at all here"
    assert cut("Done. All done!") == "Done. All done!"


def test_make_prompt_has_one_placeholder():
    import random

    cfg = load_config(None)["prompts"]
    prompts = [make_prompt(random.Random(i), cfg) for i in range(400)]
    assert all(p.count(AUDIO_TOKEN) == 1 for p in prompts)
    frac = sum(p != AUDIO_TOKEN for p in prompts) / len(prompts)
    assert 0.15 < frac < 0.35  # instruction_fraction 0.25
    assert any(p.startswith(AUDIO_TOKEN + "\n") for p in prompts) and any(p.endswith("\n" + AUDIO_TOKEN) for p in prompts)


def test_eval_only_voice_and_text_excluded(tmp_path, teacher_dir):
    from audio_minichat.dataprep.corpora import is_eval_text

    with pytest.raises(ValueError, match="evaluation"):
        _voices(tiny_config(tmp_path, teacher_dir, voices={"list": [{"engine": "piper", "name": "joe"}]}))
    assert not any(v.engine == "piper" or v.eval_only for v in _voices(load_config(None)))
    xsum = ("The ex-Reading defender denied fraudulent trading charges relating to the Sodje Sports "
            "Foundation - a charity to raise money for Nigerian sport.")
    assert is_eval_text(xsum)
    cfg = tiny_config(tmp_path, teacher_dir, text={"extra_documents": {"tiny": DOCS + [xsum]}}, num=20)
    rows, _ = load_or_make_plan(cfg, tmp_path)
    assert rows and not any(is_eval_text(r["transcript"]) or "Sodje" in r["transcript"] for r in rows)
    assert all(r["voice"].startswith("espeak-ng:") for r in rows)


# ------------------------------------------------------------------------------------------------ builds


@needs_espeak
def test_build_tiny_and_report(tmp_path, teacher_dir):
    from datasets import Audio, load_from_disk

    voices = ESPEAK + [{"engine": "espeak-ng", "name": "en-nowhere"}]  # no such voice: TTSError
    cfg = tiny_config(tmp_path / "out", teacher_dir, voices={"list": voices}, max_seconds=3.5, num=11)
    rep = build(cfg)
    out = tmp_path / "out"
    plan = [json.loads(line) for line in (out / "plan.jsonl").read_text().splitlines()]
    bad_voice = sum(r["voice"].startswith("espeak-ng:en-nowhere") for r in plan)
    assert bad_voice > 0
    assert rep["skipped"].get("tts_error") == bad_voice
    assert rep["skipped"].get("too_long", 0) > 0
    assert rep["total_rows"] + rep["skipped_total"] == rep["planned"] == len(plan)
    assert all(len(v) <= 5 for v in rep["examples"].values())
    dd = load_from_disk(str(out))
    assert set(dd) == {"train", "validation"}
    for split in dd.values():
        assert isinstance(split.features["audio"], Audio) and split.features["audio"].sampling_rate == 16000
        assert {"audio", "transcript", "prompt", "response", "source", "voice"} <= set(split.column_names)
        raw = split.cast_column("audio", Audio(decode=False))
        for row in raw:
            audio, sr = sf.read(__import__("io").BytesIO(row["audio"]["bytes"]))
            assert sr == 16000 and 0 < len(audio) <= 3.5 * 16000
            assert row["prompt"].count(AUDIO_TOKEN) == 1 and row["response"].strip()
            assert row["source"] == "tiny" and not row["voice"].startswith("piper")


def test_hf_audiofolder_source(tmp_path, teacher_dir):
    folder = tmp_path / "af"
    folder.mkdir()
    lines = ["file_name,text"]
    for i in range(4):
        sf.write(folder / f"u{i}.wav", speechlike(1.0 + i * 0.5, seed=i, rate=22050), 22050)
        lines.append(f"u{i}.wav,hello world number {i}")
    (folder / "broken.wav").write_bytes(b"RIFF not really a wav")
    lines.append("broken.wav,this clip cannot be decoded")
    sf.write(folder / "empty.wav", speechlike(1.0, seed=9), 16000)
    lines.append("empty.wav,")
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n")
    cfg = tiny_config(tmp_path / "out", teacher_dir, num=None, workers=1,
                      hf_dataset={"name": str(folder), "audio_column": "audio", "text_column": "text", "split": "train"})
    rep = build(cfg)
    assert rep["total_rows"] == 4
    assert rep["skipped"] == {"audio_error": 1, "empty_text": 1}
    from datasets import Audio, load_from_disk

    dd = load_from_disk(str(tmp_path / "out"))
    rows = list(dd["train"].cast_column("audio", Audio(decode=False))) + list(dd["validation"].cast_column("audio", Audio(decode=False)))
    durations = sorted(round(r["duration"], 2) for r in rows)
    assert durations == [1.0, 1.5, 2.0, 2.5]  # resampled 22.05 kHz -> 16 kHz, lengths preserved
    assert all(r["voice"] == "hf:af" and r["transcript"].startswith("hello world") for r in rows)


@needs_espeak
def test_killed_build_resumes_without_loss_or_duplicates(tmp_path, teacher_dir):
    out = tmp_path / "out"
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_config(out, teacher_dir)))
    cmd = [sys.executable, "-m", "audio_minichat.dataprep", "--config", str(cfg_path)]

    def run(kill):
        env = {**os.environ, "TQDM_DISABLE": "1"}
        env.pop(KILL_ENV, None)
        if kill:
            env[KILL_ENV] = kill
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)

    # 8 rows in 3 shards -> 3 synthesis + 3 teacher commits
    r = run("after:2")  # dies with 2 synthesis shards committed
    assert r.returncode == 17, r.stderr[-2000:]
    assert not (out / "dataset_dict.json").exists()
    assert sorted(p.name for p in (out / "shards").glob("*/synth")) == ["synth", "synth"]
    r = run("before-commit:3")  # synthesis shard 3 and teacher shard 1 done, dies mid teacher shard 2
    assert r.returncode == 17, r.stderr[-2000:]
    assert list((out / "shards").glob("*/.teacher.*.tmp*")), "the interrupted shard leaves only a temporary dir"
    assert len(list((out / "shards").glob("*/teacher"))) == 1
    r = run(None)
    assert r.returncode == 0, r.stderr[-2000:]
    assert not list(out.rglob(".*.tmp*"))
    ids = final_ids(out)
    assert len(ids) == len(set(ids))
    assert set(ids) == set(plan_ids(out)) and len(ids) == 8
    rep = json.loads((out / "report.json").read_text())
    assert rep["total_rows"] == 8 and rep["skipped_total"] == 0


def test_bad_configs_and_a_resume_with_another_num_are_one_line_with_exit_2(tmp_path, teacher_dir, capsys):
    import yaml

    from audio_minichat.dataprep.build import main

    def run(raw: dict, *extra) -> str:
        path = tmp_path / "data.yaml"
        path.write_text(yaml.safe_dump(raw))
        capsys.readouterr()
        assert main(["--config", str(path), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error: "), err
        return err

    base = {"out": str(tmp_path / "out"), "num": 4}
    assert "unknown config keys ['nmu']" in run({**base, "nmu": 3})
    assert "'num' must be an integer, got 'four'" in run({**base, "num": "four"})
    assert "'validation_fraction' = 1.5 is outside [0.0, 1.0)" in run({**base, "validation_fraction": 1.5})
    assert "No such file" in run(base, "--config", str(tmp_path / "missing.yaml"))
    # a finished build, resumed with another --num: the plan would change under it
    cfg = tiny_config(tmp_path / "built", teacher_dir)
    first = build(cfg)
    assert first["invocations"] == 1 and first["timings_total"]["synthesis_s"] == first["timings"]["synthesis_s"]
    raw = {k: v for k, v in cfg.items()}
    message = run(raw, "--num", "9")
    assert "holds a build of 8 utterances (this one asks for 9)" in message and "rerun with the same config and --num" in message
    # the same build resumed (nothing left to do): the report counts both invocations
    again = build(cfg)
    assert again["invocations"] == 2 and again["total_rows"] == first["total_rows"]
    assert again["timings_total"]["synthesis_s"] == pytest.approx(first["timings"]["synthesis_s"] + again["timings"]["synthesis_s"], abs=0.11)
