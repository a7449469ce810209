"""The reliability pass (issue 22, item 6) and answers that end well (issue 25, item 5): each defect the probes
found, as behaviour. On the tiny model of conftest (real files, real generation); the last test runs the real
offline default."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import make_model, speechlike

from audio_minichat.app.batch import JsonlLog, StreamPrinter, trim_to_sentence
from audio_minichat.app.cli import main
from audio_minichat.processing_audio_minichat import AudioInputError, AudioTruncatedWarning, load_audio

ROOT = Path(__file__).resolve().parents[1]
SHORT = ROOT / "examples" / "short.wav"
RATE = 16000


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny_reliability")
    model, processor = make_model("whisper")
    model.generation_config.suppress_tokens = processor.tokenizer.all_special_ids  # answers in words
    model.config.provenance = {"projector_trained": True}  # (no untrained-projector warning on stderr)
    model.save_pretrained(d / "model")
    processor.save_pretrained(d / "model")
    sf.write(d / "a.wav", speechlike(1.0, seed=1), RATE)
    sf.write(d / "b.wav", speechlike(1.2, seed=2), RATE)
    sf.write(d / "silence.wav", np.zeros(2 * RATE, np.float32), RATE)
    return d


def _run(capsys, argv):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def _one_line(code, err, pattern):
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert re.fullmatch(pattern, err.strip()), err


def _opts(tiny, *extra):
    return ["--model", str(tiny / "model"), "--mode", "e2e", "--max-new-tokens", "4", "--quiet", *extra]


# ---- a checkpoint folder that an interrupted copy left ----------------------------------------------------------
def test_an_incomplete_checkpoint_folder_is_one_line_naming_the_file(capsys, tiny, tmp_path):
    from audio_minichat.assets.default_build import checkpoint_problem
    from audio_minichat.inference.speech_llm import SpeechLLM

    assert checkpoint_problem(tiny / "model") is None
    size = (tiny / "model" / "model.safetensors").stat().st_size
    cases = {}
    for case in ("cut", "header", "missing", "processor"):
        folder = tmp_path / case
        shutil.copytree(tiny / "model", folder)
        cases[case] = folder
    weights = (tiny / "model" / "model.safetensors").read_bytes()
    (cases["cut"] / "model.safetensors").write_bytes(weights[: size // 3])
    (cases["header"] / "model.safetensors").write_bytes(weights[:100])
    (cases["missing"] / "model.safetensors").unlink()
    (cases["processor"] / "processor_config.json").unlink()
    expected = {
        "cut": rf"'{re.escape(str(cases['cut'] / 'model.safetensors'))}' is cut short: {size // 3} bytes, its tensors "
               rf"need {size} \(an interrupted copy\?\)",
        "header": rf"'{re.escape(str(cases['header'] / 'model.safetensors'))}' is cut short: 100 bytes, its header alone "
                  r"claims \d+ \(an interrupted copy\?\)",
        "missing": rf"'{re.escape(str(cases['missing'] / 'model.safetensors'))}' is missing \(an interrupted copy\?\): "
                   r"the checkpoint's weights are not all there",
        "processor": rf"'{re.escape(str(cases['processor'] / 'processor_config.json'))}' is missing \(an interrupted "
                     r"copy\?\): the checkpoint's processor cannot be loaded",
    }
    for case, folder in cases.items():
        code, out, err = _run(capsys, ["summarize", str(tiny / "a.wav"), "--model", str(folder), "--quiet"])
        _one_line(code, err, rf"error: --model '{re.escape(str(folder))}' is not a complete checkpoint: {expected[case]}")
        assert out == ""
        with pytest.raises(ValueError, match=rf"^'{re.escape(str(folder))}' is not a complete checkpoint: {expected[case]}$"):
            SpeechLLM(folder)


# ---- --jsonl -----------------------------------------------------------------------------------------------
def test_jsonl_that_cannot_be_written_is_one_line_at_start_or_when_it_fails(capsys, tiny, tmp_path):
    """A file that cannot be opened for writing: one line before any model loads (here, no model at all). A
    device that refuses the write itself (a full disk: /dev/full): the answers so far, then one line, exit 2."""
    code, out, err = _run(capsys, ["summarize", str(tiny / "a.wav"), "--model", str(tmp_path / "no-model"),
                                   "--jsonl", "/sys/out.jsonl"])
    _one_line(code, err, r"error: --jsonl '/sys/out\.jsonl' cannot be written \(Permission denied\)")
    assert not Path("/sys/out.jsonl").exists()
    fresh = tmp_path / "fresh.jsonl"
    JsonlLog(fresh)  # the check creates nothing
    assert not fresh.exists()
    code, out, err = _run(capsys, ["summarize", str(tiny / "a.wav"), str(tiny / "b.wav"), *_opts(tiny, "--jsonl", "/dev/full")])
    _one_line(code, err, r"error: --jsonl '/dev/full' cannot be written \(No space left on device\): stopped after the "
                         r"answers above")
    assert re.findall(r"^== (.+) ==$", out, flags=re.M) == [str(tiny / "a.wav")]


def test_a_file_name_that_is_not_utf8_is_answered_and_recorded_escaped(capsys, tiny, tmp_path):
    folder = tmp_path / "names"
    folder.mkdir()
    shutil.copy(tiny / "a.wav", folder / "a.wav")
    odd = os.path.join(os.fsencode(folder), b"caf\xe9.wav")  # Latin-1, not UTF-8
    shutil.copy(tiny / "b.wav", odd)
    log = tmp_path / "out.jsonl"
    code, out, err = _run(capsys, ["summarize", str(folder), *_opts(tiny, "--jsonl", str(log))])
    assert code == 0, err
    shown = str(folder / "caf\\xe9.wav")
    assert re.findall(r"^== (.+) ==$", out, flags=re.M) == [str(folder / "a.wav"), shown]
    records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert [r["file"] for r in records] == [str(folder / "a.wav"), shown] and all(r["answer"] for r in records)
    code, out, err = _run(capsys, ["summarize", str(folder), *_opts(tiny, "--jsonl", str(log))])
    assert code == 0 and out == "" and len(log.read_text(encoding="utf-8").splitlines()) == 2


def test_jsonl_resume_is_keyed_on_the_settings(capsys, tiny, tmp_path):
    """A record answers one job: the same file with another --max-new-tokens or --model (mode and prompt:
    tests/test_cli_batch.py) is answered again; with the same settings it is skipped."""
    log = tmp_path / "out.jsonl"
    other_model = tmp_path / "copy"
    shutil.copytree(tiny / "model", other_model)
    wav = str(tiny / "a.wav")

    def run(*argv):
        code, out, err = _run(capsys, ["summarize", wav, *argv, "--jsonl", str(log)])
        assert code == 0, err
        return "skipped" in err if "--quiet" not in argv else out == ""

    base = ["--model", str(tiny / "model"), "--mode", "e2e", "--max-new-tokens", "4"]
    assert not run(*base)
    assert run(*base)
    assert not run(*base[:-1], "5")
    assert run(*base[:-1], "5")
    assert not run("--model", str(other_model), *base[2:])
    assert run("--model", str(other_model), *base[2:])
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(Path(r["model"]).name, r["max_new_tokens"]) for r in records] == [("model", 4), ("model", 5), ("copy", 4)]
    old = tmp_path / "old.jsonl"  # a record of an earlier version (no model, no max_new_tokens) answers no job now
    old.write_text(json.dumps({"file": os.path.abspath(wav), "mode": "e2e", "prompt": records[0]["prompt"], "error": None}) + "\n")
    assert not JsonlLog(old).is_done(wav, "e2e", records[0]["prompt"], str(tiny / "model"), 4)
    assert JsonlLog(old).is_done(wav, "e2e", records[0]["prompt"])


# ---- audio files whose headers lie ---------------------------------------------------------------------------
def test_a_wav_header_with_a_rate_under_100_hz_is_one_line(capsys, tiny, tmp_path):
    low = tmp_path / "low.wav"
    sf.write(low, speechlike(1.0)[:500], 50)
    for mode in ("e2e", "cascade"):
        code, out, err = _run(capsys, ["summarize", str(low), "--model", str(tiny / "model"), "--mode", mode, "--quiet"])
        _one_line(code, err, rf"error: audio: audio file '{re.escape(str(low))}': a sampling rate of 50 Hz is not usable: "
                             r"it must be a whole number of at least 1000 Hz \(speech is recorded at 8000 Hz or more\)\.")


def test_sampling_rates_in_the_processor(tiny):
    """One rate per clip in a list: each clip resampled from its own (the same as each alone); a rate <= 0 or of
    the wrong count: our own one line."""
    from audio_minichat.processing_audio_minichat import AudioMiniChatProcessor

    processor = AudioMiniChatProcessor.from_pretrained(tiny / "model")
    prompt = processor.build_prompt("<|audio|>")
    a, b = speechlike(1.0, seed=1), speechlike(1.0, seed=2)
    b8k = b[::2].copy()
    both = processor(text=[prompt, prompt], audio=[a, b8k], sampling_rate=[RATE, 8000])
    alone = [processor(text=prompt, audio=a, sampling_rate=RATE), processor(text=prompt, audio=b8k, sampling_rate=8000)]
    clip = both["audio_window_clip"]
    for i, single in enumerate(alone):
        torch.testing.assert_close(both["input_features"][clip == i], single["input_features"])
    with pytest.raises(ValueError, match=r"^sampling_rate is a list of 3 rates for 2 audio clip\(s\): give one rate for all "
                                         r"clips, or one per clip, in order\.$"):
        processor(text=[prompt, prompt], audio=[a, b8k], sampling_rate=[RATE, 8000, 8000])
    for rate in (0, -16000):
        with pytest.raises(AudioInputError, match=rf"^audio clip 0: a sampling rate of {rate} Hz is not usable: it must be > 0 "
                                                  r"\(speech is recorded at 8000 Hz or more\)\.$"):
            processor(text=prompt, audio=a, sampling_rate=rate)
    with pytest.raises(AudioInputError, match=r"^audio: a sampling rate of 'fast' Hz|^audio: the sampling rate must be a number"):
        load_audio(a, "fast")


def test_a_truncated_wav_is_answered_with_one_warning_line(capsys, tiny, tmp_path):
    whole = (tiny / "b.wav").read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole[: 44 + (len(whole) - 44) // 2])
    code, out, err = _run(capsys, ["summarize", str(cut), *_opts(tiny)])
    assert code == 0 and out.strip()
    assert err.strip().splitlines() == [f"warning: audio file {str(cut)!r} is cut short: its header says 1.20 s, the file "
                                        "holds 0.60 s (an interrupted copy?); answering what is there"]
    with pytest.warns(AudioTruncatedWarning, match="is cut short: its header says 1.20 s, the file holds 0.60 s"):
        assert len(load_audio(cut)) == int(0.6 * RATE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a whole file warns nothing
        load_audio(tiny / "b.wav")


# ---- output: `| head`, the network, silence in the pipeline ----------------------------------------------------
def test_a_reader_that_goes_away_stops_the_cli_quietly(tiny):
    """`audio-minichat ... | head -c 0`: stdout closed before the answer is printed. No traceback, no
    'Exception ignored' at exit: the status a shell reports for a Unix tool killed by SIGPIPE (141)."""
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run([sys.executable, "-m", "audio_minichat.app.cli", "summarize", "--text", "hello world",
                               "--model", str(tiny / "model"), "--max-new-tokens", "3", "--quiet"],
                              stdout=write, stderr=subprocess.PIPE, timeout=300)
    finally:
        os.close(write)
    assert done.returncode == 141 and done.stderr.decode() == ""


def test_serving_beyond_loopback_warns_that_the_page_is_open(capsys, tiny, tmp_path):
    from audio_minichat.app.serve import network_exposure

    assert network_exposure("127.0.0.1", 7860) is None and network_exposure("localhost", 7860) is None
    assert network_exposure("::1", 7860) is None if socket.has_ipv6 else True
    warning = ("--host 0.0.0.0 opens the page to the network: anyone who can reach this machine on port {} can use it "
               "(the page has no authentication); --host 127.0.0.1 keeps it to this machine")
    assert network_exposure("0.0.0.0", 7861) == warning.format(7861)
    with socket.socket() as probe:  # a free port
        probe.bind(("0.0.0.0", 0))
        port = probe.getsockname()[1]
    code, out, err = _run(capsys, ["serve", "--host", "0.0.0.0", "--port", str(port), "--model", str(tmp_path / "none"), "--quiet"])
    assert code == 2 and err.strip().splitlines() == [f"warning: {warning.format(port)}",
                                                      f"error: model directory {str(tmp_path / 'none')!r} does not exist"]


def test_the_pipeline_does_not_answer_silence(tiny, tmp_path):
    from audio_minichat.pipeline_audio_minichat import AudioMiniChatPipeline
    from audio_minichat.processing_audio_minichat import AudioMiniChatProcessor
    from audio_minichat.modeling_audio_minichat import AudioMiniChatForConditionalGeneration

    pipe = AudioMiniChatPipeline(model=AudioMiniChatForConditionalGeneration.from_pretrained(tiny / "model"),
                                 processor=AudioMiniChatProcessor.from_pretrained(tiny / "model"))
    silence, speech = str(tiny / "silence.wav"), str(tiny / "a.wav")
    expected = f"no speech detected in {silence} (digital silence: every sample is 0); nothing to answer"
    with pytest.warns(UserWarning, match=re.escape(expected)):
        assert pipe(silence, max_new_tokens=4) == {"generated_text": "", "warning": expected}
    answered = pipe(speech, max_new_tokens=4)
    assert answered["generated_text"] and "warning" not in answered
    with pytest.warns(UserWarning, match="no speech detected"):
        batch = pipe([silence, speech], max_new_tokens=4, batch_size=2)
    assert batch == [{"generated_text": "", "warning": expected}, answered]
    assert pipe(silence, max_new_tokens=4, check_speech=False)["generated_text"] != ""
    blip = {"array": speechlike(0.05), "sampling_rate": RATE}
    with pytest.warns(UserWarning, match=r"no speech detected in the audio \(0\.05 s long"):
        assert pipe(blip, max_new_tokens=4)["generated_text"] == ""


# ---- answers that end well ----------------------------------------------------------------------------------
def test_trim_to_sentence_and_the_stream_printer():
    assert trim_to_sentence("One. Two three! Four five") == "One. Two three!"
    assert trim_to_sentence('He said "go." Then 3.5 more') == 'He said "go."'
    assert trim_to_sentence("no sentence end at all ") == "no sentence end at all"
    assert trim_to_sentence("Ends well.") == "Ends well."
    import io

    pieces = [" Hello", " world.", " It costs 3", ".5 euros", ". And then", " it"]
    for cut, expected in ((True, "Hello world. It costs 3.5 euros."), (False, "Hello world. It costs 3.5 euros. And then it")):
        out = io.StringIO()
        printer = StreamPrinter(out, trim=True)
        seen = []
        for piece in pieces:
            printer(piece)
            seen.append(out.getvalue())
        assert seen[1] == "" and seen[2] == "Hello world." and seen[3] == "Hello world."  # "3." is not an end
        printer.finish(cut=cut)
        assert out.getvalue() == expected + "\n"


def test_finish_reason_answer_key_raw_and_text_implies_text_mode(capsys, tiny):
    from audio_minichat.inference.speech_llm import SpeechLLM, finish_reason

    assert finish_reason([5, 6, 2], 8, 2) == "stop" and finish_reason([5, 6, 7], 3, [2, 9]) == "length"
    assert finish_reason([5, 9], 2, [2, 9]) == "stop" and finish_reason([5], 3, 2) == "stop"
    llm = SpeechLLM(tiny / "model")
    cut = llm.text("hello world", max_new_tokens=3)
    assert cut.finish_reason == "length" and llm.e2e(str(tiny / "a.wav"), max_new_tokens=3).finish_reason == "length"
    base = ["summarize", "--text", "hello world, the summary of a short article", "--model", str(tiny / "model"),
            "--max-new-tokens", "12", "--quiet"]  # no --mode: --text implies text
    code, out, _ = _run(capsys, base + ["--json", "--raw"])
    raw = json.loads(out)
    assert code == 0 and raw["mode"] == "text" and raw["finish_reason"] == "length" and raw["answer"] == raw["text"] != ""
    code, out, _ = _run(capsys, base + ["--json"])
    trimmed = json.loads(out)
    assert trimmed["answer"] == trimmed["text"] == trim_to_sentence(raw["answer"]) and trimmed["finish_reason"] == "length"
    assert _run(capsys, base)[1] == trimmed["answer"] + "\n" and _run(capsys, base + ["--raw"])[1] == raw["answer"] + "\n"
    code, out, _ = _run(capsys, ["summarize", str(tiny / "a.wav"), str(tiny / "b.wav"), *_opts(tiny, "--json")])
    records = json.loads(out)
    assert [r["finish_reason"] for r in records] == ["length", "length"] and all("text" not in r and r["answer"] for r in records)
    code, out, err = _run(capsys, base + ["--mode", "e2e"])
    _one_line(code, err, r"error: --text is content for --mode text, not --mode e2e: leave --mode out \(or give AUDIO "
                         r"for the speech modes\)")


def test_one_chapter_is_printed_once(capsys, tiny):
    argv = ["summarize", str(tiny / "a.wav"), *_opts(tiny)]
    code, plain, _ = _run(capsys, argv)
    code2, chapters, _ = _run(capsys, argv + ["--chapters"])
    assert code == code2 == 0 and chapters == plain and plain.count("\n") == 1
    code, out, _ = _run(capsys, argv + ["--chapters", "--json"])
    assert len(json.loads(out)["chapters"]) == 1


@pytest.mark.integration
def test_default_finish_reason_and_no_max_length_warning(capfd):
    """The real default: a short answer ends by itself ("stop"), a 6-token one is cut ("length") and trimmed to a
    whole sentence; cascade transcription through the Python API writes no "max_length" warning."""
    from audio_minichat.assets.default_build import build_default
    from audio_minichat.inference.speech_llm import SpeechLLM

    from transformers.utils import logging as hf_logging

    llm = SpeechLLM(build_default())
    capfd.readouterr()
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()  # as a fresh Python session has it (the CLI tests turn it down)
    records: list[logging.LogRecord] = []
    collect = logging.Handler()
    collect.emit = records.append  # transformers' own logger does not propagate to caplog
    hf_logging.get_logger().addHandler(collect)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            answer = llm.cascade(str(SHORT), prompt="Who is speaking? Answer in one short sentence.", max_new_tokens=64)
            cut = llm.text(answer.transcript, prompt="Summarize in three sentences:", max_new_tokens=6)
    finally:
        hf_logging.get_logger().removeHandler(collect)
        hf_logging.set_verbosity(level)
    said = capfd.readouterr()
    logged = " ".join(r.getMessage() for r in records) + said.err + said.out + " ".join(str(w.message) for w in caught)
    assert "max_length" not in logged and "max_new_tokens" not in logged, logged
    assert answer.finish_reason == "stop" and answer.text, answer
    # the cap per window now set as max_length: the same transcript as with max_new_tokens=224
    assert answer.transcript == ("Hi Maya, it's Tom. I'm running about 20 minutes late because the bridge on Mill Road is "
                                 "closed. Can you start the meeting without me and save me a seat near the window? Thanks. "
                                 "See you soon.")
    assert cut.finish_reason == "length" and cut.text
