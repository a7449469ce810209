"""The command line for real work: many files (headers, progress, --jsonl and its resume, a bad file among good
ones, exit statuses), streaming (SpeechLLM's on_text; the CLI on a real terminal), the audio formats people have,
--help / --version / --threads. On the tiny model of conftest (real files, real generation)."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import sys
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import make_model, speechlike

from audio_minichat.app.batch import JsonlLog, StreamPrinter, default_threads
from audio_minichat.app.cli import main
from audio_minichat.processing_audio_minichat import AudioInputError, load_audio

ROOT = Path(__file__).resolve().parents[1]
SHORT = ROOT / "examples" / "short.wav"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny model that answers in words (its generation config suppresses the special tokens it would otherwise
    write), three clips, a file that is not audio, and a folder with a subfolder."""
    d = tmp_path_factory.mktemp("tiny_batch")
    model, processor = make_model("whisper")
    model.generation_config.suppress_tokens = processor.tokenizer.all_special_ids
    model.save_pretrained(d / "model")
    processor.save_pretrained(d / "model")
    for i, name in enumerate(["a.wav", "b.flac", "c.ogg"]):
        sf.write(d / name, speechlike(1.0 + 0.25 * i, seed=i), 16000)
    (d / "bad.wav").write_text("not audio at all")
    (d / "doc.txt").write_text("hello world, the summary of a short article")
    folder = d / "folder"
    (folder / "sub").mkdir(parents=True)
    sf.write(folder / "z.wav", speechlike(1.0, seed=5), 16000)
    sf.write(folder / "m.flac", speechlike(1.0, seed=6), 16000)
    sf.write(folder / "sub" / "deep.wav", speechlike(1.0, seed=7), 16000)
    (folder / "notes.md").write_text("not audio")
    return d


def _run(capsys, argv):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def _args(tiny, *extra):
    return ["--model", str(tiny / "model"), "--mode", "e2e", "--max-new-tokens", "4", *extra]


# ---- many files ---------------------------------------------------------------------------------------------
def test_many_files_headers_progress_and_the_single_file_output(capsys, tiny):
    files = [str(tiny / n) for n in ("a.wav", "b.flac", "c.ogg")]
    code, single, _ = _run(capsys, ["summarize", files[0], *_args(tiny, "--quiet")])
    assert code == 0 and single.count("\n") == 1 and single.strip()  # one file: the answer alone, as before
    code, out, err = _run(capsys, ["summarize", *files, *_args(tiny)])
    assert code == 0
    headers = re.findall(r"^== (.+) ==$", out, flags=re.M)
    assert headers == files
    blocks = [b.strip() for b in re.split(r"^== .+ ==$", out, flags=re.M)[1:]]
    assert blocks[0] == single.strip() and all(blocks)
    assert [f"[audio-minichat] file {i}/3: {f}" for i, f in enumerate(files, 1)] == re.findall(r"\[audio-minichat\] file .*", err)


def test_folder_sorted_not_recursive_unless_asked(capsys, tiny):
    folder = tiny / "folder"
    code, out, _ = _run(capsys, ["summarize", str(folder), *_args(tiny, "--quiet")])
    assert code == 0
    assert re.findall(r"^== (.+) ==$", out, flags=re.M) == [str(folder / "m.flac"), str(folder / "z.wav")]
    code, out, _ = _run(capsys, ["summarize", str(folder), "--recursive", *_args(tiny, "--quiet")])
    assert re.findall(r"^== (.+) ==$", out, flags=re.M) == [str(folder / "m.flac"), str(folder / "sub" / "deep.wav"),
                                                            str(folder / "z.wav")]


def test_jsonl_records_and_a_rerun_skips_what_is_done(capsys, tiny, tmp_path):
    out_path = tmp_path / "out.jsonl"
    first = [str(tiny / "a.wav"), str(tiny / "b.flac")]
    code, out, _ = _run(capsys, ["summarize", *first, *_args(tiny, "--jsonl", str(out_path))])
    assert code == 0
    records = [json.loads(line) for line in out_path.read_text().splitlines()]
    assert [r["file"] for r in records] == [os.path.abspath(f) for f in first]
    for r in records:
        assert r["mode"] == "e2e" and r["prompt"].startswith("Summarize") and r["error"] is None
        assert r["answer"] and {"generate_s", "load_s"} <= set(r["timings"]) and r["audio_seconds"] > 0
    answers = [b.strip() for b in re.split(r"^== .+ ==$", out, flags=re.M)[1:]]
    assert answers == [r["answer"] for r in records]
    # the same run again: nothing to do; with a new file: only it runs
    code, out, err = _run(capsys, ["summarize", *first, *_args(tiny, "--jsonl", str(out_path))])
    assert code == 0 and out == "" and err.count("skipped") == 2
    assert len(out_path.read_text().splitlines()) == 2
    code, out, err = _run(capsys, ["summarize", *first, str(tiny / "c.ogg"), *_args(tiny, "--jsonl", str(out_path))])
    assert code == 0 and err.count("skipped") == 2
    assert re.findall(r"^== (.+) ==$", out, flags=re.M) == [str(tiny / "c.ogg")]
    records = [json.loads(line) for line in out_path.read_text().splitlines()]
    assert [Path(r["file"]).name for r in records] == ["a.wav", "b.flac", "c.ogg"]
    # another prompt is another job: the files run again
    code, out, err = _run(capsys, ["ask", first[0], "--prompt", "what is said?", *_args(tiny, "--jsonl", str(out_path))])
    assert code == 0 and "skipped" not in err and out.strip()
    assert len(out_path.read_text().splitlines()) == 4


def test_jsonl_log_survives_a_cut_line(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text(json.dumps({"file": "/x/a.wav", "mode": "e2e", "prompt": "p", "error": None}) + "\n"
                    + json.dumps({"file": "/x/b.wav", "mode": "e2e", "prompt": "p", "error": "cannot read"}) + "\n"
                    + '{"file": "/x/c.wav", "mo')  # a writer killed mid-line
    log = JsonlLog(path)
    assert log.is_done("/x/a.wav", "e2e", "p") and not log.is_done("/x/a.wav", "e2e", "q")
    assert not log.is_done("/x/b.wav", "e2e", "p")  # failed: runs again
    assert not log.is_done("/x/c.wav", "e2e", "p") and log.skipped_lines == 1
    log.append({"file": "/x/c.wav", "mode": "e2e", "prompt": "p", "error": None})
    lines = path.read_text().splitlines()
    assert json.loads(lines[-1])["file"] == "/x/c.wav" and lines[-2].endswith('"mo')  # a line of its own
    assert JsonlLog(path).is_done("/x/c.wav", "e2e", "p")


def test_a_bad_file_among_good_ones(capsys, tiny, tmp_path):
    files = [str(tiny / "a.wav"), str(tiny / "bad.wav"), str(tiny / "b.flac")]
    out_path = tmp_path / "out.jsonl"
    code, out, err = _run(capsys, ["summarize", *files, *_args(tiny, "--jsonl", str(out_path))])
    assert code == 1  # some failed
    assert re.findall(r"^== (.+) ==$", out, flags=re.M) == [files[0], files[2]]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and re.search(r"cannot read audio file '.*bad\.wav'", errors[0])
    records = {Path(r["file"]).name: r for r in map(json.loads, out_path.read_text().splitlines())}
    assert records["bad.wav"]["answer"] is None and "cannot read audio file" in records["bad.wav"]["error"]
    assert records["a.wav"]["error"] is None and records["b.flac"]["error"] is None
    # the rerun tries the failed file again (and only it); every file failing is exit 2, as for one file
    code, out, err = _run(capsys, ["summarize", *files, *_args(tiny, "--jsonl", str(out_path))])
    assert code == 1 and out == "" and err.count("skipped") == 2
    code, out, err = _run(capsys, ["summarize", files[1], str(tiny / "bad.wav"), *_args(tiny, "--quiet")])
    assert code == 2 and out == "" and len(err.splitlines()) == 2
    code, out, err = _run(capsys, ["summarize", files[1], *_args(tiny, "--quiet")])
    assert code == 2 and len(err.splitlines()) == 1


def test_several_files_json_is_a_list_of_records(capsys, tiny):
    code, out, _ = _run(capsys, ["summarize", str(tiny / "a.wav"), str(tiny / "bad.wav"), *_args(tiny, "--json", "--quiet")])
    assert code == 1
    records = json.loads(out)
    assert [Path(r["file"]).name for r in records] == ["a.wav", "bad.wav"]
    assert records[0]["answer"] and records[0]["error"] is None and records[1]["error"]


def test_many_text_files_in_text_mode(capsys, tiny, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("the people of the world")
    code, out, _ = _run(capsys, ["summarize", str(tiny / "doc.txt"), str(other), "--mode", "text", "--model",
                                 str(tiny / "model"), "--max-new-tokens", "4", "--quiet"])
    assert code == 0 and re.findall(r"^== (.+) ==$", out, flags=re.M) == [str(tiny / "doc.txt"), str(other)]


def test_missing_file_among_many_is_a_usage_error_before_the_model_loads(capsys, tiny):
    code, out, err = _run(capsys, ["summarize", str(tiny / "a.wav"), str(tiny / "nope.wav"), "--model", "/nonexistent"])
    assert code == 2 and re.fullmatch(r"error: audio file '.*nope\.wav' does not exist\n", err)


# ---- streaming ----------------------------------------------------------------------------------------------
def test_on_text_pieces_concatenate_to_the_answer(tiny):
    from audio_minichat.inference.speech_llm import SpeechLLM

    llm = SpeechLLM(tiny / "model")
    for mode in ("e2e", "text"):
        pieces = []
        streamed = llm.run(mode, audio=str(tiny / "a.wav"), content="hello world", max_new_tokens=8, on_text=pieces.append)
        plain = llm.run(mode, audio=str(tiny / "a.wav"), content="hello world", max_new_tokens=8)
        assert len(pieces) > 1 and "".join(pieces).strip() == streamed.text == plain.text != ""


def test_stream_printer_prints_exactly_the_stripped_answer():
    import io

    out = io.StringIO()
    printer = StreamPrinter(out, before=lambda: "== a.wav ==\n")
    for piece in ["\n ", " Hello", " world", ".", " \n", " ", "Bye", "  \n"]:
        printer(piece)
    printer.finish()
    assert out.getvalue() == "== a.wav ==\nHello world. \n Bye\n"
    assert "".join(["\n ", " Hello", " world", ".", " \n", " ", "Bye", "  \n"]).strip() == "Hello world. \n Bye"


def _on_a_terminal(argv: list[str]) -> tuple[int, str]:
    """The CLI (in this process) with its stdout on a real pseudo-terminal: its exit status and what the terminal
    showed (read by a thread as it comes; the terminal's CR LF line ends read as LF)."""
    leader, follower = pty.openpty()
    shown = []

    def read():
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the follower side is closed
                return
            if not chunk:
                return
            shown.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    terminal = open(follower, "w", encoding="utf-8", closefd=True)
    assert terminal.isatty()
    try:
        with contextlib.redirect_stdout(terminal):
            code = main(argv)
    finally:
        terminal.close()
    reader.join(timeout=30)
    os.close(leader)
    return code, b"".join(shown).decode().replace("\r\n", "\n")


@pytest.mark.parametrize("mode", ["e2e", "text"])
def test_streaming_on_a_terminal_shows_what_no_stream_prints(capsys, tiny, mode, tmp_path):
    targets = [str(tiny / "a.wav"), str(tiny / "b.flac")]
    if mode == "text":
        (tmp_path / "other.txt").write_text("the people of the world")
        targets = [str(tiny / "doc.txt"), str(tmp_path / "other.txt")]
    options = ["--model", str(tiny / "model"), "--mode", mode, "--max-new-tokens", "8", "--quiet"]
    for files in (targets[:1], targets):
        code, streamed = _on_a_terminal(["summarize", *files, *options])
        assert code == 0
        code, plain = _on_a_terminal(["summarize", *files, *options, "--no-stream"])
        piped = _run(capsys, ["summarize", *files, *options])
        assert piped[0] == 0
        assert streamed == plain == piped[1] and streamed.strip()
        assert streamed.count("== ") == (0 if len(files) == 1 else 2)


def test_the_cli_streams_token_by_token_on_a_terminal(capsys, tiny, monkeypatch):
    """On a terminal the answer reaches stdout piece by piece (each piece written and flushed as the LLM writes it);
    into a pipe, once."""
    from audio_minichat.app import batch

    writes = []
    real_call = batch.StreamPrinter.__call__
    monkeypatch.setattr(batch.StreamPrinter, "__call__", lambda self, piece: (writes.append(piece), real_call(self, piece)))
    code, streamed = _on_a_terminal(["summarize", str(tiny / "a.wav"), *_args(tiny, "--max-new-tokens", "8", "--quiet")])
    assert code == 0 and len(writes) >= 4 and "".join(writes).strip() == streamed.strip()
    writes.clear()
    assert _run(capsys, ["summarize", str(tiny / "a.wav"), *_args(tiny, "--max-new-tokens", "8", "--quiet")])[0] == 0
    assert writes == []


# ---- formats ------------------------------------------------------------------------------------------------
def _write_m4a(path: Path, clip: np.ndarray, rate: int) -> None:
    """AAC in an MP4 container with PyAV's encoder (its first frame at pts 0: the muxer records the encoder's
    priming samples, as phone recordings do, and the decoder drops them)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(clip.reshape(1, -1).astype(np.float32), format="flt", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = rate, 0, Fraction(1, rate)
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)


def _aligned_correlation(ref: np.ndarray, other: np.ndarray, max_lag: int = 3200) -> float:
    """Correlation of two takes of one clip at the lag (within +-max_lag samples) that lines them up best."""
    n = len(ref) + len(other)
    xcorr = np.fft.irfft(np.fft.rfft(other, n) * np.conj(np.fft.rfft(ref, n)), n)
    lag = int(np.argmax(np.concatenate([xcorr[-max_lag:], xcorr[: max_lag + 1]]))) - max_lag
    a, b = (ref, other[lag:]) if lag >= 0 else (ref[-lag:], other)
    k = min(len(a), len(b))
    return float(np.corrcoef(a[:k], b[:k])[0, 1])


@pytest.fixture(scope="module")
def formats(tmp_path_factory):
    d = tmp_path_factory.mktemp("formats")
    clip, rate = sf.read(SHORT, dtype="float32")
    written = {}
    for name, fmt, subtype in [("flac", "FLAC", None), ("ogg", "OGG", "VORBIS"), ("opus", "OGG", "OPUS"),
                               ("mp3", "MP3", "MPEG_LAYER_III")]:
        sf.write(d / f"short.{name}", clip, rate, format=fmt, subtype=subtype)
        written[name] = d / f"short.{name}"
    stereo = np.stack([clip, 0.5 * clip], axis=1)  # a stereo 44.1 kHz phone-style recording, too
    _write_m4a(d / "short.m4a", clip, rate)
    written["m4a"] = d / "short.m4a"
    import torchaudio.functional as AF

    wide = AF.resample(torch.from_numpy(stereo.T.copy()), rate, 44100).numpy().T
    sf.write(d / "stereo44k.mp3", wide, 44100, format="MP3")
    written["mp3-stereo-44.1k"] = d / "stereo44k.mp3"
    return written


@pytest.mark.parametrize("name", ["flac", "ogg", "opus", "mp3", "m4a", "mp3-stereo-44.1k"])
def test_each_format_decodes_to_the_wav(formats, name):
    ref = load_audio(SHORT)
    got = load_audio(formats[name])
    assert got.dtype == np.float32 and got.ndim == 1
    assert abs(len(got) - len(ref)) / 16000 < 0.05, (len(got), len(ref))
    floor = 0.999 if name == "flac" else 0.95  # lossless, then lossy codecs (measured 0.995-0.9999)
    assert _aligned_correlation(ref, got) > floor


def test_a_missing_decoder_names_the_file_and_what_to_install(formats, monkeypatch, tmp_path, capsys, tiny):
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` fails, as where PyAV is not installed
    monkeypatch.setenv("PATH", str(tmp_path))  # and no ffmpeg program on PATH
    m4a = str(formats["m4a"])
    with pytest.raises(AudioInputError) as info:
        load_audio(m4a)
    message = str(info.value)
    assert m4a in message and "pip install av" in message and "apt-get install ffmpeg" in message
    assert "M4A audio needs a decoder" in message
    code, out, err = _run(capsys, ["summarize", m4a, *_args(tiny, "--quiet")])
    assert code == 2 and len(err.splitlines()) == 1 and "pip install av" in err and m4a in err
    assert load_audio(formats["mp3"]).size  # libsndfile's own formats need no decoder


# ---- --help, --version, --threads ---------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["summarize", "ask", "transcribe", "build-default"])
def test_help_shows_defaults_modes_and_examples(capsys, command):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    examples = re.findall(rf"^  audio-minichat {command}\b.*", text, flags=re.M)
    assert "examples:" in text and 3 <= len(examples) <= 5, text
    if command != "build-default":
        assert "(default: 128)" in text and "(default: cpu)" in text and "(default: auto:" in text
        assert "--threads N" in text and "exit status:" in text and re.search(r"^  1 +some files failed", text, re.M)
        assert "--recursive" in text and "--jsonl OUT" in text
    if command in ("summarize", "ask"):
        assert "(default: cascade" in text and "e2e puts the speech itself" in text and "--no-stream" in text
    if command == "summarize":
        assert "(default: 'Summarize the following speech in a few sentences:')" in " ".join(text.split())


def test_version(capsys):
    setup = (ROOT / "setup.py").read_text(encoding="utf-8")
    version = re.search(r'version="([^"]+)"', setup).group(1)
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out == f"audio-minichat {version}\n"


def test_threads_are_set_before_the_model_runs(capsys, tiny):
    before = torch.get_num_threads()
    try:
        for n in (1, 2):
            code, out, _ = _run(capsys, ["summarize", str(tiny / "a.wav"), *_args(tiny, "--threads", str(n), "--json", "--quiet")])
            assert code == 0 and json.loads(out)["threads"] == n  # torch's count while the answer was generated
            assert torch.get_num_threads() == before  # and the caller's own again after the run
        code, _, err = _run(capsys, ["summarize", str(tiny / "a.wav"), *_args(tiny, "--threads", "0", "--quiet")])
        assert code == 2 and "--threads must be >= 1" in err
    finally:
        torch.set_num_threads(before)


def test_default_threads_is_the_idle_processors():
    assert default_threads(cores=2, load=0.0) == 1  # 2 cores: 1 thread, idle or not (measured: 2 never faster)
    assert default_threads(cores=2, load=1.0) == 1
    assert default_threads(cores=1, load=0.0) == 1
    assert default_threads(cores=16, load=4.2) == 12  # more cores: the idle ones
    assert default_threads(cores=8, load=11.0) == 1  # never under 1
    assert 1 <= default_threads() <= len(os.sched_getaffinity(0))
