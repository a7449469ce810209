"""Recordings of any length (inference/longform.py): cuts at pauses, chapters, the combined answer, bounded memory,
the CLI's --chapters / --json; the real default end to end on a two-minute recording."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import make_model, speechlike

from audio_minichat.app.cli import main
from audio_minichat.inference import longform as L
from audio_minichat.inference.speech_llm import SpeechLLM, frame_dbfs
from audio_minichat.processing_audio_minichat import AudioInputError, load_audio

ROOT = Path(__file__).resolve().parents[1]
RATE = 16000
PROMPT = "summarize"


def _clip_with_gaps(parts=(3.3, 4.1, 2.7, 3.6), gap=0.5, noise=0.001, seed=0):
    """Speech-like parts separated by quiet-room gaps; returns the clip and the gaps' sample ranges."""
    rng = np.random.default_rng(seed)
    pieces, gaps, at = [], [], 0
    for i, seconds in enumerate(parts):
        pieces.append(speechlike(seconds, seed=i + 1))
        at += len(pieces[-1])
        if i < len(parts) - 1:
            pieces.append((noise * rng.standard_normal(int(gap * RATE))).astype(np.float32))
            gaps.append((at, at + len(pieces[-1])))
            at += len(pieces[-1])
    return np.concatenate(pieces), gaps


def _check_cover(ranges, n, max_samples):
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))  # no gap, no overlap
    assert all(0 < e - s <= max_samples for s, e in ranges)


def test_plan_segments_cuts_in_the_pauses():
    clip, gaps = _clip_with_gaps()
    ranges = L.plan_segments(clip, RATE, max_seconds=5.0)
    _check_cover(ranges, len(clip), 5 * RATE)
    assert len(ranges) == 4  # 15.2 s in segments of at most 5 s, each cut in the gap before the limit
    for (_, cut), (g0, g1) in zip(ranges, gaps):
        assert g0 <= cut <= g1, (cut, g0, g1)
        assert abs(cut - (g0 + g1) / 2) <= 0.1 * RATE  # the middle of the pause
    # larger segments: still cuts only in gaps
    ranges = L.plan_segments(clip, RATE, max_seconds=9.0)
    _check_cover(ranges, len(clip), 9 * RATE)
    assert len(ranges) == 2 and any(g0 <= ranges[0][1] <= g1 for g0, g1 in gaps)
    # a clip shorter than the limit is one segment; one with no pause is still cut under the limit
    assert L.plan_segments(clip, RATE, max_seconds=20.0) == [(0, len(clip))]
    steady = speechlike(12.0, seed=5)
    _check_cover(L.plan_segments(steady, RATE, max_seconds=4.0), len(steady), 4 * RATE)
    with pytest.raises(ValueError, match="segment length must be > 0"):
        L.plan_segments(clip, RATE, max_seconds=0)


def test_levels_in_blocks_equal_the_whole_clip_and_stay_small():
    clip, _ = _clip_with_gaps()
    np.testing.assert_allclose(L.frame_levels(clip, RATE, block_seconds=0.77), frame_dbfs(clip, RATE), rtol=1e-6, atol=1e-4)
    assert L.frame_levels(clip[:100], RATE).shape == frame_dbfs(clip[:100], RATE).shape == (1,)
    # ten minutes: measured in blocks, a small fraction of what the decoded clip (38 MB float32) would take
    long = np.tile(clip, int(600 / (len(clip) / RATE)) + 1)[: 600 * RATE]
    tracemalloc.start()
    levels = L.frame_levels(long, RATE)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert levels.shape == frame_dbfs(long[: 3 * RATE], RATE).shape[:0] + (1 + (len(long) - 400) // 160,)
    assert peak < 12e6, peak


def test_file_source_reads_blocks_like_load_audio(tmp_path):
    """A 44.1 kHz stereo file: levels from blocks, and each segment read by seek equal what the whole file gives."""
    clip, _ = _clip_with_gaps()
    stereo = np.stack([clip, 0.5 * clip], axis=1)
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo, 44100, subtype="FLOAT")  # (as if recorded at 44.1 kHz: the content is what matters)
    source = L._AudioSource(str(path), None, RATE)
    assert source.clip is None and source.rate == 44100 and source.frames == len(clip)
    mono = stereo.mean(axis=1).astype(np.float32)
    np.testing.assert_allclose(source.levels(), frame_dbfs(mono, 44100), rtol=1e-6, atol=1e-4)
    s, e = 100_000, 400_000
    np.testing.assert_array_equal(source.read(s, e), load_audio(mono[s:e], 44100, RATE))
    assert L.plan_from_levels(source.levels(), source.frames, 44100, 5.0) == L.plan_segments(mono, 44100, 5.0)


def test_format_time_range_and_chapters():
    assert L.format_time_range(0, 290) == "00:00-04:50"
    assert L.format_time_range(605.4, 900) == "10:05-15:00"
    assert L.format_time_range(3723, 3900) == "1:02:03-1:05:00"
    assert L.format_time_range(3500, 3660) == "0:58:20-1:01:00"
    chapters = [{"start_s": 0.0, "end_s": 1790.2, "text": "First.", "transcript": None},
                {"start_s": 1790.2, "end_s": 3650.0, "text": "", "transcript": ""}]
    assert L.format_chapters(chapters) == "0:00:00-0:29:50 First.\n0:29:50-1:00:50 (no speech)"
    assert L.format_chapters([{"start_s": None, "end_s": None, "text": "A.\n\nB.", "transcript": "x"}]) == "part 1 A. B."


# ---------------------------------------------------------------------------------------------------------
# summarize_long on a tiny real model
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny Whisper + Llama checkpoint whose greedy answers are words (its specials suppressed), and a 15 s
    recording with pauses."""
    d = tmp_path_factory.mktemp("tiny_long")
    model, processor = make_model("whisper")
    model.generation_config.suppress_tokens = list(range(6))  # <unk>, <|im_start|>, ... : words only
    model.save_pretrained(d)
    processor.save_pretrained(d)
    clip, gaps = _clip_with_gaps()
    sf.write(d / "long.wav", clip, RATE)
    sf.write(d / "short.wav", clip[: 3 * RATE], RATE)
    quiet = (0.0003 * np.random.default_rng(3).standard_normal(12 * RATE)).astype(np.float32)
    sf.write(d / "quiet.wav", quiet, RATE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        llm = SpeechLLM(d)
    return d, llm, clip


def _run(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tiny model's untrained-projector warning
        return fn(*args, **kwargs)


def test_summarize_long_chapters_and_combined_answer(tiny):
    d, llm, clip = tiny
    progress, streamed = [], []
    answer = _run(L.summarize_long, llm, "e2e", audio=str(d / "long.wav"), prompt=PROMPT, max_new_tokens=4,
                  segment_seconds=5.0, on_progress=lambda i, n, c: progress.append((i, n, c)), on_text=streamed.append)
    ranges = L.plan_segments(clip, RATE, 5.0)
    assert len(answer.chapters) == len(ranges) == 4
    assert [(c["start_s"], c["end_s"]) for c in answer.chapters] == [(round(s / RATE, 3), round(e / RATE, 3)) for s, e in ranges]
    assert [(i, n) for i, n, _ in progress] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert [c for _, _, c in progress] == answer.chapters
    segment_prompt = L.SEGMENT_PROMPT.format(noun="recording")
    for chapter, (s, e) in zip(answer.chapters, ranges):  # each chapter is the mode's answer to its segment
        assert chapter["text"] == _run(llm.e2e, clip[s:e], prompt=segment_prompt, max_new_tokens=4, sampling_rate=RATE).text
        assert chapter["text"]
    combined = _run(llm.text, "\n\n".join(c["text"] for c in answer.chapters), prompt=PROMPT, max_new_tokens=4)
    assert answer.text == combined.text and answer.text
    assert "".join(streamed).strip() == answer.text  # only the final answer streams
    assert answer.mode == "e2e" and answer.audio_seconds == pytest.approx(len(clip) / RATE)
    assert "untrained" in answer.warning and "combine_s" in answer.timings


def test_short_recording_is_llm_run_itself(tiny):
    d, llm, _ = tiny
    drop = lambda a: {k: v for k, v in a.to_dict().items() if k not in ("timings", "speech")}  # noqa: E731
    for audio in (str(d / "short.wav"), str(d / "long.wav")):  # both fit one prompt of the tiny model's context
        long = _run(L.summarize_long, llm, "e2e", audio=audio, prompt=PROMPT, max_new_tokens=4)
        assert long.chapters is None
        assert drop(long) == drop(_run(llm.run, "e2e", audio=audio, prompt=PROMPT, max_new_tokens=4))
    forced = _run(L.summarize_long, llm, "e2e", audio=str(d / "short.wav"), prompt=PROMPT, max_new_tokens=4,
                  force_chapters=True)
    assert forced.chapters == [{"start_s": 0.0, "end_s": 3.0, "text": forced.text, "transcript": forced.transcript}]
    content = "hello world . " * 10
    assert (_run(L.summarize_long, llm, "text", content=content, prompt=PROMPT, max_new_tokens=4).text
            == _run(llm.run, "text", content=content, prompt=PROMPT, max_new_tokens=4).text)


def test_capacity_follows_the_context_and_the_front_end(tiny):
    _, llm, _ = tiny
    cap = L.segment_capacity(llm, "e2e", [PROMPT], max_new_tokens=100)
    tokens = llm.processor.num_audio_tokens
    assert tokens(int(cap.seconds * RATE)) <= cap.tokens < tokens(int((cap.seconds + 1) * RATE))
    cascade = L.segment_capacity(llm, "cascade", [PROMPT], max_new_tokens=100)
    assert cascade.seconds == pytest.approx(cascade.tokens / L.CASCADE_TOKENS_PER_SECOND)
    assert L.segment_capacity(llm, "cascade", [PROMPT], max_new_tokens=1000).tokens == cascade.tokens - 900
    with pytest.raises(ValueError, match="leaves no room for the recording"):
        L.segment_capacity(llm, "e2e", [PROMPT], max_new_tokens=8190)


def test_text_too_long_is_chunked_and_combined_hierarchically(tiny, monkeypatch):
    d, llm, _ = tiny
    words = "the word . a hot day .\n\nwe can go . ".split(" ")
    content = " ".join(words * 40)
    pieces = L.split_text(llm, content, 20)
    count = lambda t: len(llm.processor.tokenizer(t, add_special_tokens=False)["input_ids"])  # noqa: E731
    assert all(count(p) <= 20 for p in pieces) and len(pieces) >= count(content) // 20
    assert " ".join(pieces).split() == content.split()
    assert all(p.endswith(".") for p in pieces[:-1])  # at sentence ends
    # a context that holds one prompt of ~60 content tokens: 12 chapters of 4-token summaries need two levels
    monkeypatch.setattr(llm.processor, "max_context_length", 100)
    calls = []
    real_text = llm.text
    monkeypatch.setattr(llm, "text", lambda c, **kw: (calls.append(kw.get("prompt")), real_text(c, **kw))[1])
    answer = _run(L.summarize_long, llm, "text", content=content, prompt=PROMPT, max_new_tokens=12, segment_tokens=20)
    n = len(answer.chapters)
    assert n == len(L.split_text(llm, content, 20)) and all(c["start_s"] is None for c in answer.chapters)
    group = L.SEGMENT_PROMPT.format(noun="text")
    assert calls[:n] == [group] * n and calls[-1] == PROMPT
    assert group in calls[n:-1]  # the chapter summaries did not fit: summarized again in groups
    assert answer.text and answer.chapters[0]["transcript"] == L.split_text(llm, content, 20)[0]


def test_silent_segments_and_bad_input(tiny):
    d, llm, clip = tiny
    gap = np.zeros(6 * RATE, dtype=np.float32)
    path = d / "gap.wav"
    sf.write(path, np.concatenate([clip[: 4 * RATE], gap, clip[: 4 * RATE]]), RATE)
    answer = _run(L.summarize_long, llm, "e2e", audio=str(path), prompt=PROMPT, max_new_tokens=4, segment_seconds=5.0)
    texts = [c["text"] for c in answer.chapters]
    assert "" in texts and texts[0] and texts[-1] and "no speech" not in (answer.warning or "")
    silent = _run(L.summarize_long, llm, "e2e", audio=str(d / "quiet.wav"), prompt=PROMPT, max_new_tokens=4,
                  segment_seconds=5.0)
    assert silent.text == "" and re.search(r"no speech detected in .*quiet\.wav \(in none of its 3 segments\)", silent.warning)
    with pytest.raises(ValueError, match="segment length must be > 0"):
        L.summarize_long(llm, "e2e", audio=str(path), segment_seconds=0)
    (d / "notes.wav").write_text("not audio")
    with pytest.raises(AudioInputError, match="cannot read audio file"):
        L.summarize_long(llm, "e2e", audio=str(d / "notes.wav"))


def test_cli_chapters_and_json_on_tiny_model(tiny, capsys):
    d, _, clip = tiny
    argv = ["summarize", str(d / "long.wav"), "--model", str(d), "--mode", "e2e", "--segment-seconds", "5",
            "--max-new-tokens", "3", "--no-stream"]
    assert main(argv + ["--chapters"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.rstrip("\n").split("\n")
    ranges = [L.format_time_range(s / RATE, e / RATE) for s, e in L.plan_segments(clip, RATE, 5.0)]
    assert [line.split(" ", 1)[0] for line in lines[:4]] == ranges == ["00:00-00:04", "00:04-00:08", "00:08-00:11", "00:11-00:15"]
    assert lines[4] == "" and len(lines) == 6 and lines[5]
    assert re.search(r"\[audio-minichat\] segment 2/4 \(00:04-00:08\) done", captured.err)
    assert main(argv + ["--json", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [c["text"] for c in out["chapters"]] == [line.split(" ", 1)[1] for line in lines[:4]]
    assert out["text"] == lines[5]


@pytest.mark.integration
def test_default_model_chapters_of_the_two_minute_example():
    """The real default, cascade: the 2-minute example in segments of at most 50 s, chapters with times, then
    the overall summary; --json carries the same chapters with their transcripts."""
    cmd = [sys.executable, "-m", "audio_minichat.app.cli", "summarize", str(ROOT / "examples" / "news_2min.wav"),
           "--segment-seconds", "50", "--max-new-tokens", "20", "--chapters", "--json"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout)
    chapters = out["chapters"]
    assert len(chapters) == 3 and chapters[0]["start_s"] == 0 and chapters[-1]["end_s"] == pytest.approx(119.095, abs=0.01)
    assert all(0 < c["end_s"] - c["start_s"] <= 50 for c in chapters)
    assert all(a["end_s"] == b["start_s"] for a, b in zip(chapters, chapters[1:]))
    assert all(c["text"] and c["transcript"] for c in chapters) and out["text"]
    heard = " ".join(c["transcript"] for c in chapters).lower()
    assert "ferr" in heard and "tid" in heard  # the recording is about tidal-powered ferries
    assert len(re.findall(r"\[audio-minichat\] segment \d/3 \(\d\d:\d\d-\d\d:\d\d\) done", run.stderr)) == 3


@pytest.mark.integration
def test_benchmark_long_form_smoke(tmp_path):
    """The benchmark's long-form case on 2 spoken documents (espeak-ng) in segments of at most 60 s: the text
    system cuts the concatenated text the same way, and the cascade is scored against the text system's output."""
    from audio_minichat.eval.benchmark import main as benchmark

    assert benchmark(["--long-form", "2", "--voices", "espeak", "--systems", "text,cascade", "--max-new-tokens", "6",
                      "--long-form-segment-seconds", "60", "--cache-dir", str(tmp_path / "cache"),
                      "--out-dir", str(tmp_path / "out"), "--no-progress"]) == 0
    result = json.loads((tmp_path / "out" / "longform.json").read_text())
    text, cascade = result["records"]
    assert (text["system"], cascade["system"]) == ("text", "cascade")
    wav = Path(result["config"]["recordings"]["espeak"])
    info = sf.info(str(wav))
    parts = [sf.info(str(tmp_path / "cache" / "espeak" / f"{i}.wav")).frames for i in result["config"]["documents"]]
    assert info.frames == sum(parts) + 16000  # the two documents with a 1 s pause between
    assert cascade["segments"] == len(cascade["chapters"]) >= 2 and text["segments"] >= 2
    assert all(c["end_s"] - c["start_s"] <= 60 for c in cascade["chapters"])
    assert text["output"] and cascade["output"] and 0 <= cascade["rougeL_vs_text"] <= 100
    assert "| cascade | espeak |" in (tmp_path / "out" / "longform.md").read_text()
