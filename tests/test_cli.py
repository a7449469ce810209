"""The audio-minichat command line: bad input gives one line and exit 2; modes run; real default end to end."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
from conftest import make_model, speechlike

from audio_minichat.app.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    model, processor = make_model("whisper")
    model.save_pretrained(d)
    processor.save_pretrained(d)
    sf.write(d / "clip.wav", speechlike(1.5), 16000)
    (d / "notes.wav").write_text("not audio at all")
    (d / "doc.txt").write_text("hello world")
    return d


def _one_line_error(capsys, argv, pattern):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert re.search(pattern, err), err


@pytest.mark.parametrize(
    "argv,pattern",
    [
        ([], "choose a command"),
        (["summarize"], "AUDIO is required"),
        (["summarize", "missing.wav"], "audio file 'missing.wav' does not exist"),
        (["summarize", str(ROOT / "docs")], r"AUDIO '.*docs' is a folder with no audio files \(\.wav, .*--recursive"),
        (["transcribe", str(ROOT / "examples" / "short.wav"), "--device", "foo"], "device 'foo' is not a device name"),
        (["ask", str(ROOT / "examples" / "short.wav"), "--prompt", " "], "ask: --prompt is empty"),
        (["summarize", "x.wav", "--mode", "nope"], "invalid choice: 'nope'"),
        (["ask", "x.wav"], "the following arguments are required: --prompt"),
        (["summarize", "--mode", "text"], "--mode text needs --text STRING or a .txt file"),
        (["summarize", "notes.txt"], "is a text file: use --mode text"),
        (["summarize", "x.wav", "--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
        (["transcribe"], "the following arguments are required: audio"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_arguments_one_line_exit_2(capsys, argv, pattern):
    _one_line_error(capsys, argv, pattern)


def test_unreadable_audio_and_missing_model(capsys, tiny_dir):
    _one_line_error(capsys, ["summarize", str(tiny_dir / "notes.wav"), "--model", str(tiny_dir), "--quiet"],
                    r"cannot read audio file '.*notes\.wav'")
    _one_line_error(capsys, ["summarize", str(tiny_dir / "clip.wav"), "--model", str(tiny_dir / "nope"), "--quiet"],
                    "model directory .* does not exist")


def test_e2e_and_text_modes_json_on_tiny_model(capsys, tiny_dir):
    assert main(["ask", str(tiny_dir / "clip.wav"), "--model", str(tiny_dir), "--prompt", "summarize", "--mode", "e2e",
                 "--text-position", "after", "--max-new-tokens", "3", "--json", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mode"] == "e2e" and out["audio_seconds"] == pytest.approx(1.5)
    assert "untrained" in out["warning"]
    assert {"generate_s", "load_s"} <= set(out["timings"])
    assert main(["summarize", str(tiny_dir / "doc.txt"), "--mode", "text", "--model", str(tiny_dir),
                 "--max-new-tokens", "3", "--json", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mode"] == "text" and out["transcript"] == "hello world" and out["warning"] is None


def _words(text):
    return re.sub(r"[^a-z0-9 ]", " ", text.lower()).split()


@pytest.mark.integration
def test_default_model_three_modes_on_short_example(tmp_path):
    """The real offline default: cascade transcribes the example, all three modes summarize it, and the
    end-to-end answer is about the speech (it names what the recording is about) with no warning."""
    wav, txt = ROOT / "examples" / "short.wav", ROOT / "examples" / "short.txt"
    cmd = [sys.executable, "-m", "audio_minichat.app.cli"]
    results = {}
    for mode, target in (("cascade", wav), ("text", txt), ("e2e", wav)):
        # --raw: all 24 tokens (a cut answer is otherwise trimmed to its last whole sentence: tests/test_reliability.py)
        run = subprocess.run(cmd + ["summarize", str(target), "--mode", mode, "--json", "--quiet", "--max-new-tokens", "24", "--raw"],
                             capture_output=True, text=True, timeout=900)
        assert run.returncode == 0, run.stderr[-2000:]
        results[mode] = json.loads(run.stdout)
    reference = _words(txt.read_text())
    heard = _words(results["cascade"]["transcript"])
    overlap = len(set(heard) & set(reference)) / len(set(reference))
    assert overlap > 0.8, (heard, reference)
    assert results["cascade"]["text"] and results["text"]["text"]
    assert results["e2e"]["warning"] is None
    e2e_words = set(_words(results["e2e"]["text"]))
    assert len(e2e_words & {"maya", "tom", "late", "minutes", "bridge", "meeting", "road", "seat", "window"}) >= 2, results["e2e"]
    run = subprocess.run(cmd + ["transcribe", str(wav), "--json", "--quiet"], capture_output=True, text=True, timeout=600)
    assert json.loads(run.stdout)["text"] == results["cascade"]["transcript"]
    # the first cascade run wrote the checkpoint's CTranslate2 folder (inference.ct2_asr): a second one starts
    # transcribing before the model loads (app.cli._start_asr) and answers the same
    run = subprocess.run(cmd + ["summarize", str(wav), "--mode", "cascade", "--json", "--quiet", "--max-new-tokens", "24", "--raw"],
                         capture_output=True, text=True, timeout=900)
    again = json.loads(run.stdout)
    assert "asr_wait_s" in again["timings"] and again["timings"]["asr_wait_s"] <= again["timings"]["asr_s"]
    assert (again["text"], again["transcript"]) == (results["cascade"]["text"], results["cascade"]["transcript"])
