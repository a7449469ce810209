"""Subtitles: `transcribe --format srt|vtt|json` timed by Whisper's timestamp tokens (inference/subtitles.py). The
formats are checked exactly; the times on the real default against a clip built from real speech (examples/) and
silences of known length, in one piece and cut into pieces (a long recording's path)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audio_minichat.inference.subtitles import (
    format_segments,
    format_srt,
    format_timestamp,
    format_vtt,
    transcribe_segments,
)

ROOT = Path(__file__).resolve().parents[1]
RATE = 16000
SEGMENTS = [{"start": 0.0, "end": 1.0, "text": "Hello there."},
            {"start": 61.5, "end": 3725.25, "text": " Arrows --> are\nkept  on one line. "}]


def test_timestamps_and_formats_exactly():
    assert format_timestamp(1.0) == "00:00:01,000"
    assert format_timestamp(1.0, ".") == "00:00:01.000"
    assert format_timestamp(3725.2504) == "01:02:05,250"
    assert format_timestamp(59.9996) == "00:01:00,000"  # rounded to the millisecond, carried into the minute
    assert format_srt(SEGMENTS) == ("1\n00:00:00,000 --> 00:00:01,000\nHello there.\n\n"
                                    "2\n00:01:01,500 --> 01:02:05,250\nArrows -> are kept on one line.\n")
    assert format_vtt(SEGMENTS) == ("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nHello there.\n\n"
                                    "00:01:01.500 --> 01:02:05.250\nArrows -> are kept on one line.\n")
    assert format_vtt([]) == "WEBVTT\n\n" and format_srt([]) == ""
    assert json.loads(format_segments(SEGMENTS[:1], "json")) == {
        "text": "Hello there.", "segments": [{"start": 0.0, "end": 1.0, "text": "Hello there."}]}
    assert format_segments(SEGMENTS[:1], "txt") == "Hello there.\n"
    with pytest.raises(ValueError, match="subtitle format must be one of txt, srt, vtt, json, got 'ass'"):
        format_segments(SEGMENTS, "ass")


def _clip_with_known_silences() -> tuple[np.ndarray, list[tuple[float, float]]]:
    """42 s: real speech (the news example's first sentence, the whole short example, two news sentences) between
    silences of 1, 3, 2.5 and 2 s (room hiss at -80 dBFS); the speech spans in seconds."""
    news, _ = sf.read(str(ROOT / "examples" / "news_2min.wav"), dtype="float32")
    short, _ = sf.read(str(ROOT / "examples" / "short.wav"), dtype="float32")
    rng = np.random.default_rng(0)
    silence = lambda s: (1e-4 * rng.standard_normal(int(s * RATE))).astype(np.float32)  # noqa: E731
    parts = [silence(1.0), news[: int(4.25 * RATE)], silence(3.0), short, silence(2.5),
             news[int(15.3 * RATE) : int(29.9 * RATE)], silence(2.0)]
    spans, t = [], 0
    for i, part in enumerate(parts):
        if i % 2:
            spans.append((t / RATE, (t + len(part)) / RATE))
        t += len(part)
    return np.concatenate(parts), spans


@pytest.fixture(scope="module")
def default_llm():
    from audio_minichat.assets.default_build import build_default
    from audio_minichat.inference.speech_llm import SpeechLLM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SpeechLLM(build_default())


@pytest.mark.integration
@pytest.mark.parametrize("piece_seconds", [600.0, 20.0])
def test_segment_times_fall_on_the_known_speech(default_llm, piece_seconds, tmp_path):
    """Every segment lies within a speech span (0.5 s tolerance), every span is covered, its first segment starts
    within 0.5 s of the span's start; in 20 s pieces (cut at the pauses) the times are offset per piece alike."""
    clip, spans = _clip_with_known_silences()
    path = tmp_path / "known.wav"
    sf.write(str(path), clip, RATE)
    answer, segments = transcribe_segments(default_llm, str(path), piece_seconds=piece_seconds)
    assert answer.audio_seconds == pytest.approx(len(clip) / RATE) and answer.warning is None
    assert answer.text == " ".join(s["text"] for s in segments)
    tolerance = 0.5
    covered = {i: [] for i in range(len(spans))}
    for seg in segments:
        assert seg["start"] < seg["end"]
        inside = [i for i, (a, b) in enumerate(spans) if a - tolerance <= seg["start"] and seg["end"] <= b + tolerance]
        assert len(inside) == 1, (seg, spans)
        covered[inside[0]].append(seg)
    for i, (a, b) in enumerate(spans):
        assert covered[i], f"no segment in the speech span {a:.2f}-{b:.2f} s: {segments}"
        assert abs(covered[i][0]["start"] - a) <= tolerance, (covered[i][0], a)
    assert all(x["end"] <= y["start"] for x, y in zip(segments, segments[1:]))
    heard = answer.text.lower()
    assert "harbor town" in heard and "mill road" in heard and "monday morning" in heard


@pytest.mark.integration
def test_transcribe_format_srt_vtt_json_on_the_command_line(default_llm, capsys):
    """`audio-minichat transcribe --format ...` prints what format_segments writes for the segments the library
    gives; --json carries the same segments."""
    from audio_minichat.app.cli import main

    wav = str(ROOT / "examples" / "short.wav")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        answer, segments = transcribe_segments(default_llm, wav)
    assert len(segments) >= 2 and segments[0]["start"] < 0.5 and segments[-1]["end"] <= 14.72
    for fmt in ("srt", "vtt", "json"):
        assert main(["transcribe", wav, "--format", fmt, "--quiet"]) == 0
        assert capsys.readouterr().out == format_segments(segments, fmt, answer.text)
    assert main(["transcribe", wav, "--format", "srt", "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["segments"] == segments
