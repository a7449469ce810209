"""Correct by default: audio with no speech is not answered, builds survive a crash and clean up after killed ones
and are readable by everyone, and every bad argument gives one line and exit 2."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import encoder_config, make_model, make_tokenizer, speechlike, tiny_llama_config

from audio_minichat.app.cli import main
from audio_minichat.processing_audio_minichat import AudioInputError, load_audio

ROOT = Path(__file__).resolve().parents[1]
SHORT = ROOT / "examples" / "short.wav"
RATE = 16000


def one_line_error(capsys, argv, pattern):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert re.search(pattern, err), err
    return err


def no_speech_clips(d: Path) -> dict[str, Path]:
    """The clips the issue names: 5 s of silence, 0.05 s (of real speech), low-level noise (at -60 dBFS, under the
    energy floor; at -50 dBFS and -30 dBFS, above it: Whisper's no-speech probability decides), and mains hum."""
    rng = np.random.default_rng(0)
    speech, _ = sf.read(SHORT, dtype="float32")
    clips = {
        "silence_5s": np.zeros(5 * RATE, np.float32),
        "speech_0.05s": speech[8000:8800],
        "noise_-60dB": 0.001 * rng.standard_normal(5 * RATE),
        "noise_-50dB": 0.00316 * rng.standard_normal(5 * RATE),
        "noise_-30dB": 0.0316 * rng.standard_normal(5 * RATE),
        "hum_50Hz": 0.05 * np.sin(2 * np.pi * 50 * np.arange(5 * RATE) / RATE),
    }
    paths = {}
    for name, clip in clips.items():
        paths[name] = d / f"{name}.wav"
        sf.write(paths[name], np.asarray(clip, np.float32), RATE)
    return paths


# ---- 8. silence is not speech: the tiny model (energy check; it has no Whisper decoder) -------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny_errors")
    model, processor = make_model("whisper")
    processor.max_context_length = 128  # a small context, for the prompt + max_new_tokens check
    model.save_pretrained(d / "model")
    processor.save_pretrained(d / "model")
    sf.write(d / "clip.wav", speechlike(1.5), RATE)
    sf.write(d / "silence.wav", np.zeros(5 * RATE, np.float32), RATE)
    sf.write(d / "blip.wav", speechlike(0.05), RATE)
    sf.write(d / "empty.wav", np.zeros(0, np.float32), RATE)
    (d / "doc.txt").write_text("hello world")
    (d / "folder.wav").mkdir()
    return d


@pytest.mark.parametrize("command", [["summarize"], ["ask", "--prompt", "what is said?"], ["transcribe"]])
@pytest.mark.parametrize("clip,why", [("silence.wav", "digital silence"), ("blip.wav", r"0\.05 s long")])
def test_no_speech_gives_an_empty_answer_and_a_warning_exit_0(capsys, tiny, command, clip, why):
    """Each audio mode: exit 0, an empty answer on stdout, one warning line on stderr naming the file and why; the
    LLM (and Whisper) never run. In --json the same warning and the measurements."""
    path = str(tiny / clip)
    argv = [command[0], path, *command[1:], "--model", str(tiny / "model"), "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr()
    assert out.out == "\n"
    assert out.err.strip().splitlines() == [out.err.strip()]
    assert re.fullmatch(rf"warning: no speech detected in {re.escape(path)} \(.*{why}.*\); nothing to answer", out.err.strip())
    assert main(argv + ["--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["text"] == "" and result["warning"].startswith(f"no speech detected in {path}")
    assert result["speech"]["speech"] is False and "generate_s" not in result["timings"] and "asr_s" not in result["timings"]
    if command[0] != "transcribe":  # cascade: the same empty answer (before any transcription)
        assert main(argv + ["--mode", "cascade", "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["mode"] == "cascade" and result["text"] == "" and "no speech detected" in result["warning"]


def test_speech_is_answered_and_the_check_can_be_turned_off(capsys, tiny):
    model = str(tiny / "model")
    assert main(["summarize", str(tiny / "clip.wav"), "--model", model, "--mode", "e2e", "--max-new-tokens", "2", "--json",
                 "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["speech"]["speech"] is True and result["speech"]["active_seconds"] > 1.0
    assert "no speech" not in (result["warning"] or "") and {"speech_check_s", "generate_s"} <= set(result["timings"])
    assert main(["summarize", str(tiny / "silence.wav"), "--model", model, "--mode", "e2e", "--max-new-tokens", "2", "--json", "--quiet",
                 "--no-speech-check"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["speech"] is None and "generate_s" in result["timings"] and "no speech" not in (result["warning"] or "")


def test_help_documents_the_no_speech_behaviour(capsys):
    for command in ("summarize", "ask", "transcribe"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "no speech detected in AUDIO" in text and "exit status is 0" in text and "--no-speech-check" in text


def test_speech_check_measurements_without_whisper(tiny):
    from audio_minichat.inference.speech_llm import ENERGY_FLOOR_DBFS, SpeechLLM

    llm = SpeechLLM(tiny / "model")
    rng = np.random.default_rng(0)
    silent = llm.check_speech(np.zeros(5 * RATE, np.float32))
    assert not silent.speech and silent.loudest_frame_dbfs is None and silent.active_seconds == 0
    quiet = llm.check_speech((0.001 * rng.standard_normal(5 * RATE)).astype(np.float32))  # -60 dBFS
    assert not quiet.speech and quiet.loudest_frame_dbfs < ENERGY_FLOOR_DBFS and "silent" in quiet.reason
    short = llm.check_speech(speechlike(0.05))
    assert not short.speech and "0.05 s long" in short.reason
    heard = llm.check_speech(speechlike(1.5))
    assert heard.speech and heard.reason is None and heard.no_speech_prob is None  # no Whisper decoder here
    llm._transcribe = lambda clip: ("", 0.25)  # speech by energy, but Whisper writes no words: nothing for the LLM
    with pytest.warns(UserWarning, match=r"no speech detected in the audio \(Whisper transcribed no words\)"):
        answer = llm.cascade(speechlike(1.5), sampling_rate=RATE)
    assert answer.text == "" and answer.speech["speech"] is True and answer.timings["asr_s"] == 0.25


# ---- 8. the real default: Whisper's no-speech probability ------------------------------------------------------
@pytest.fixture(scope="module")
def default_llm():
    from audio_minichat.assets.default_build import build_default
    from audio_minichat.inference.speech_llm import SpeechLLM

    return SpeechLLM(build_default())


@pytest.mark.integration
def test_default_detects_no_speech_and_keeps_speech(default_llm, tmp_path):
    """Measured on the default (Whisper tiny.en): silence and noise have no-speech probability 0.85-0.95, the
    example's speech 0.04, and the same speech at 1 % gain (loudest frames -49 dBFS) 0.15."""
    clips = no_speech_clips(tmp_path)
    checks = {name: default_llm.check_speech(load_audio(path)) for name, path in clips.items()}
    assert not any(c.speech for c in checks.values()), {n: c.reason for n, c in checks.items() if c.speech}
    assert "digital silence" in checks["silence_5s"].reason and "0.05 s long" in checks["speech_0.05s"].reason
    assert "silent" in checks["noise_-60dB"].reason  # under the energy floor: Whisper is not asked
    for name in ("noise_-50dB", "noise_-30dB", "hum_50Hz"):
        assert checks[name].no_speech_prob > 0.7 and "no-speech probability" in checks[name].reason, checks[name]
    speech = load_audio(SHORT)
    for clip in (speech, speech * 0.01, np.concatenate([np.zeros(40 * RATE, np.float32), speech])):
        check = default_llm.check_speech(clip)
        # speech's levels vary by syllable (20+ dB): Whisper is asked only about a steady signal (quiet speech here)
        assert check.speech and (check.level_spread_db >= 6.0 or check.no_speech_prob < 0.3), check
    answer = default_llm.e2e(str(clips["silence_5s"]))
    assert answer.text == "" and answer.warning.startswith("no speech detected in")
    assert default_llm.transcribe(str(clips["noise_-30dB"])).text == ""


@pytest.mark.integration
def test_default_cli_on_silence_and_on_speech(capsys, tmp_path):
    clips = no_speech_clips(tmp_path)
    for mode in ("e2e", "cascade"):
        assert main(["summarize", str(clips["silence_5s"]), "--mode", mode, "--quiet"]) == 0
        out = capsys.readouterr()
        assert out.out == "\n" and re.fullmatch(r"warning: no speech detected in \S+silence_5s\.wav \(.*\); nothing to answer",
                                                 out.err.strip()), out
    assert main(["transcribe", str(clips["noise_-50dB"]), "--quiet"]) == 0
    out = capsys.readouterr()
    assert out.out == "\n" and "no-speech probability" in out.err and len(out.err.strip().splitlines()) == 1
    assert main(["summarize", str(SHORT), "--max-new-tokens", "12", "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["text"].strip() and result["warning"] is None and result["speech"]["level_spread_db"] > 15


# ---- 10. bad arguments: one line, exit 2 -------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_device_cuda_without_a_gpu(capsys, tiny):
    one_line_error(capsys, ["summarize", str(tiny / "clip.wav"), "--model", str(tiny / "model"), "--device", "cuda", "--quiet"],
                   r"^error: device 'cuda': no CUDA GPU is available on this machine .*; use --device cpu$")


@pytest.mark.parametrize("device,pattern", [
    ("foo", r"^error: device 'foo' is not a device name: use cpu, cuda, cuda:N or mps$"),
    ("cuda:99", r"^error: device 'cuda:99': (no CUDA GPU is available|this machine has \d+ CUDA GPU)"),
])
def test_bad_device_before_any_model_is_loaded(capsys, tiny, monkeypatch, device, pattern):
    import audio_minichat.inference.speech_llm as speech_llm

    monkeypatch.setattr(speech_llm.SpeechLLM, "__init__", lambda *a, **k: pytest.fail("the model was loaded"))
    one_line_error(capsys, ["transcribe", str(tiny / "clip.wav"), "--model", str(tiny / "model"), "--device", device], pattern)


def test_empty_prompt(capsys, tiny):
    for prompt in ("", "   "):
        one_line_error(capsys, ["ask", str(tiny / "clip.wav"), "--prompt", prompt, "--model", str(tiny / "model")],
                       r"^error: ask: --prompt is empty: give the question or instruction as text$")
    one_line_error(capsys, ["summarize", str(tiny / "clip.wav"), "--prompt", "", "--model", str(tiny / "model")],
                   r"^error: summarize: --prompt is empty: .*leave --prompt out for the default summary prompt\)$")


def test_zero_length_audio_is_empty_not_nan(capsys, tiny):
    path = str(tiny / "empty.wav")
    one_line_error(capsys, ["summarize", path, "--model", str(tiny / "model"), "--quiet"],
                   rf"^error: audio: the audio \(file '{re.escape(path)}'\) is empty \(0 samples\)\.$")
    for array in (np.zeros((0, 1), np.float32), np.zeros((1, 0), np.float32), np.zeros(0, np.float32)):
        with pytest.raises(AudioInputError, match=r"is empty \(0 samples") as info:
            load_audio(array, RATE)
        assert "NaN" not in str(info.value)


def test_a_directory_as_audio(capsys, tiny):
    folder = str(tiny / "folder.wav")
    # a folder is read for its audio files (tests/test_cli_batch.py); one with none is refused in one line
    one_line_error(capsys, ["summarize", folder, "--model", str(tiny / "model")],
                   rf"^error: AUDIO '{re.escape(folder)}' is a folder with no audio files \(\.wav, .*\) in it")
    one_line_error(capsys, ["transcribe", folder, "--recursive", "--model", str(tiny / "model")],
                   "is a folder with no audio files .* in it or its subfolders")
    with pytest.raises(AudioInputError, match="is a directory, not an audio file"):
        load_audio(folder)


def test_prompt_plus_max_new_tokens_past_the_context(capsys, tiny):
    """The tiny model's context is 128 tokens: a prompt that fits, but not with --max-new-tokens, is refused before
    generation with the largest --max-new-tokens that fits; a prompt that fills the context says so."""
    model = str(tiny / "model")
    base = ["summarize", str(tiny / "doc.txt"), "--mode", "text", "--model", model, "--quiet"]
    err = one_line_error(capsys, base + ["--max-new-tokens", "120"],
                         r"^error: the prompt is (\d+) tokens \(audio included\) and 120 new tokens would run past the LLM's "
                         r"context of 128 tokens: use max_new_tokens \(--max-new-tokens\) (\d+) or less, or shorten")
    prompt_tokens, room = map(int, re.search(r"is (\d+) tokens.* (\d+) or less", err).groups())
    assert prompt_tokens + room == 128
    assert main(base + ["--max-new-tokens", str(room), "--json"]) == 0  # exactly the room left: accepted
    assert json.loads(capsys.readouterr().out)["mode"] == "text"
    one_line_error(capsys, ["summarize", str(tiny / "clip.wav"), "--mode", "e2e", "--model", model, "--max-new-tokens", "120", "--quiet"],
                   r"^error: the prompt is \d+ tokens \(audio included\) and 120 new tokens would run past .* 128 tokens")
    one_line_error(capsys, base[:1] + ["--mode", "text", "--text", "hello " * 200, "--model", model, "--quiet"],
                   r"^error: Prompt 0 is \d+ tokens long \(audio included\) but the LLM's context is 128 tokens")


def test_read_only_cache_without_a_default(capsys, tmp_path, monkeypatch):
    """No default built and a cache folder that cannot be written: one line naming the folder and the fixes."""
    cache = tmp_path / "shared-cache"
    cache.mkdir()
    monkeypatch.setenv("AUDIO_MINICHAT_CACHE", str(cache))
    cache.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: make the kernel's refusal for other users happen here too
        real = tempfile.mkdtemp

        def mkdtemp(*args, dir=None, **kwargs):
            if dir is not None and Path(dir).resolve() == cache.resolve():
                raise PermissionError(errno.EACCES, "Permission denied", str(dir))
            return real(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    try:
        for argv in (["summarize", str(SHORT), "--quiet"], ["build-default", "--quiet"]):
            one_line_error(capsys, argv, rf"^error: the offline default model is not built in '{re.escape(str(cache))}' and that "
                                         r"folder cannot be written \(Permission denied: .*\): set AUDIO_MINICHAT_CACHE to a "
                                         r"folder you can write \(or pass --model DIR\), or run `audio-minichat build-default`")
    finally:
        cache.chmod(0o755)
    assert list(cache.iterdir()) == []


# ---- 9. builds: crash safety, leftovers of killed builds, modes ------------------------------------------------
@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """A tiny LLM and a tiny Whisper (with its feature extractor and a tokenizer) as local checkpoint folders, to
    build_model from in a second."""
    from transformers import LlamaForCausalLM, WhisperFeatureExtractor, WhisperForConditionalGeneration

    d = tmp_path_factory.mktemp("parts")
    torch.manual_seed(0)
    tok = make_tokenizer()
    llm = LlamaForCausalLM(tiny_llama_config(tok, max_position_embeddings=512, tie_word_embeddings=False))
    llm.save_pretrained(d / "llm")
    tok.save_pretrained(d / "llm")
    WhisperForConditionalGeneration(encoder_config("whisper")).save_pretrained(d / "enc")
    WhisperFeatureExtractor(feature_size=80).save_pretrained(d / "enc")
    make_tokenizer(None).save_pretrained(d / "enc")
    return str(d / "llm"), str(d / "enc")


def _tree(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _complete(directory: Path) -> bool:
    from audio_minichat.assets.default_build import READY_MARKER
    from audio_minichat.modeling_audio_minichat import AudioMiniChatForConditionalGeneration

    AudioMiniChatForConditionalGeneration.from_pretrained(directory)  # loads
    return (directory / READY_MARKER).is_file()


def _age(path: Path, seconds: float) -> None:
    """Make ``path`` and everything in it look untouched for ``seconds``."""
    then = time.time() - seconds
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.utime(p, (then, then), follow_symlinks=False)


def test_a_build_that_fails_while_saving_leaves_the_previous_build(parts, tmp_path, monkeypatch):
    from audio_minichat.assets.default_build import build_model
    from audio_minichat.processing_audio_minichat import AudioMiniChatProcessor

    out = build_model(*parts, tmp_path / "cache" / "model")
    before = _tree(out)

    def broken(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(AudioMiniChatProcessor, "save_pretrained", broken)
    with pytest.raises(OSError, match="No space left"):
        build_model(*parts, out, projector_type="mlp", projector_hidden_size=8)
    assert _tree(out) == before and _complete(out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["model"]  # no temporary directory behind


_KILLED_BUILD = """
import sys, time
from pathlib import Path
from audio_minichat.assets.default_build import build_model
from audio_minichat.processing_audio_minichat import AudioMiniChatProcessor
def hang(self, directory, *a, **k):
    (Path(directory) / "half-written").write_text("x")
    Path(sys.argv[4]).write_text(str(directory))
    time.sleep(600)
AudioMiniChatProcessor.save_pretrained = hang
build_model(sys.argv[1], sys.argv[2], sys.argv[3], projector_type="mlp", projector_hidden_size=8)
"""


def test_a_killed_build_keeps_the_previous_build_and_the_next_build_removes_its_leftovers(parts, tmp_path):
    """SIGKILL in the middle of saving: the previous build is intact and its temporary directory is left; the next
    build removes it at once (its writer's process is gone: docs/recordings.md says "by the next build"), and
    leftovers of the old naming once nothing was written in them for STALE_BUILD_SECONDS, but keeps a fresh one
    without an owner (a concurrent build still writing), one however old whose writer still runs, and other names."""
    from audio_minichat.assets.default_build import build_model
    from audio_minichat.assets.offline import STALE_BUILD_SECONDS
    from audio_minichat.utils.io import OWNER_FILE

    cache = tmp_path / "cache"
    out = build_model(*parts, cache / "audio-minichat-default")
    before = _tree(out)
    started = tmp_path / "started"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_BUILD, *parts, str(out), str(started)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 300
        while not started.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "the build did not reach save_pretrained"
            time.sleep(0.2)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    killed = Path(started.read_text())
    assert killed.is_dir() and killed.parent == cache and killed.name.startswith(".audio-minichat-default.")
    assert json.loads((killed / OWNER_FILE).read_text())["pid"] == proc.pid
    assert _tree(out) == before and _complete(out)

    old_style = [cache / ".audio-minichat-default.1a2b3c.k2j3h4ab", cache / ".audio-minichat-default.tmp-x7y8z9ab",
                 cache / ".audio-minichat-default.9f8e7d6c.tmp-old"]
    for leftover in old_style:
        (leftover / "sub").mkdir(parents=True)
        (leftover / "sub" / "model.safetensors").write_bytes(b"0" * 1024)
    stray_file = cache / ".audio-minichat-default.0a1b2c3d.tmp.json"
    stray_file.write_text("{}")
    keep = [cache / ".audio-minichat-default-untrained.1a2b3c4d.tmpabcdefgh",  # another build's (stale, not ours)
            cache / ".audio-minichat-default.notes", cache / "audio-minichat-default.bak"]
    for path in keep:
        path.mkdir()
    for path in [*old_style, stray_file, *keep]:
        _age(path, STALE_BUILD_SECONDS + 60)
    live = cache / ".audio-minichat-default.5e6f7a8b.tmpqrstuvwx"  # a concurrent build writing right now
    live.mkdir()
    (live / "model.safetensors").write_bytes(b"1")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:  # a slow build whose writer runs (here: a sleeping process), untouched for longer than STALE_BUILD_SECONDS
        held = cache / ".audio-minichat-default.6a7b8c9d.tmpheldheld"
        held.mkdir()
        own = {"pid": sleeper.pid, "host": socket.gethostname()}
        stat = Path(f"/proc/{sleeper.pid}/stat")
        if stat.exists():
            own["start"] = stat.read_text().rsplit(")", 1)[1].split()[19]
        (held / OWNER_FILE).write_text(json.dumps(own))
        _age(held, STALE_BUILD_SECONDS + 60)

        build_model(*parts, out, projector_type="mlp", projector_hidden_size=8)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert _complete(out) and _tree(out) != before and not (out / OWNER_FILE).exists()
    assert sorted(p.name for p in cache.iterdir()) == sorted(["audio-minichat-default", live.name, held.name,
                                                               *(p.name for p in keep)])


def test_a_fresh_build_is_readable_by_everyone_under_umask_022(parts, tmp_path):
    """safetensors saves 0600 and mkdtemp makes 0700: the build and the offline caches get 0644 files, 0755 folders."""
    from audio_minichat.assets.default_build import build_model
    from audio_minichat.assets.offline import _build_atomically
    from safetensors.torch import save_file

    def save(tmp):
        save_file({"w": torch.zeros(2)}, str(tmp / "model.safetensors"))
        (tmp / "shard-0").mkdir()
        save_file({"w": torch.zeros(2)}, str(tmp / "shard-0" / "part.safetensors"))

    previous = os.umask(0o022)
    try:
        built = [build_model(*parts, tmp_path / "cache" / "model"),
                 _build_atomically(tmp_path / "cache" / "asset", {"asset": "test"}, save)]
    finally:
        os.umask(previous)
    for directory in built:
        entries = [directory, *directory.rglob("*")]
        assert any(p.name.endswith(".safetensors") for p in entries)
        modes = {str(p.relative_to(directory.parent)): oct(p.stat().st_mode & 0o777) for p in entries}
        wrong = {p: m for p, m in modes.items() if m != ("0o755" if (directory.parent / p).is_dir() else "0o644")}
        assert not wrong, wrong
