"""Timed transcripts: segments with start and end times from Whisper's timestamp tokens, and the one place that
writes them as text, SRT, WebVTT or JSON (``audio-minichat transcribe --format`` and the API's
``/v1/audio/transcriptions`` both use it).

The checkpoint's own Whisper (``model.asr_model()``, the cascade's) decodes with timestamps: Whisper's sequential
long-form decoding, 30 s windows, each window restarting at the last timestamp it predicted. A recording longer
than PIECE_SECONDS is first cut at pauses into pieces of at most that length (``longform.plan_from_levels``, the
cuts ``summarize`` makes; a file is read piece by piece, never decoded whole), each piece is transcribed alone and
its segments' times are offset by the piece's start. A piece with no speech in it (``SpeechLLM.check_speech``)
gives no segments.

Whisper tiny's timestamps are coarse (on a clip with known pauses, whole seconds, a segment starting up to a second
before its speech): each segment is then tightened to its loud frames (25 ms frames over ENERGY_FLOOR_DBFS, the
speech check's floor, less TRIM_MARGIN_SECONDS), only ever shrunk; in a noisy recording, where every frame is
loud, Whisper's times stand.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from .speech_llm import ENERGY_FLOOR_DBFS, FRAME_SECONDS, HOP_SECONDS, Answer, SpeechLLM, frame_dbfs

PIECE_SECONDS = 600.0  # the longest stretch handed to Whisper's decoding at once (its mel and clip stay small)
MAX_TOKENS_PER_WINDOW = 224  # as the cascade: stops rare Whisper loops on digit strings from running away
FORMATS = ("txt", "srt", "vtt", "json")
TRIM_MARGIN_SECONDS = 0.1  # kept around the loud frames when a segment is tightened


def _tighten(start: float, end: float, loud: np.ndarray) -> tuple[float, float]:
    """``(start, end)`` (seconds in the piece) shrunk to the loud frames within it, less a margin (unchanged when
    none is loud)."""
    first, last = int(np.ceil(start / HOP_SECONDS)), int((end - FRAME_SECONDS) // HOP_SECONDS)
    inside = np.flatnonzero(loud[max(first, 0) : max(last + 1, 0)])
    if inside.size == 0:
        return start, end
    return (max(start, float((first + inside[0]) * HOP_SECONDS - TRIM_MARGIN_SECONDS)),
            min(end, float((first + inside[-1]) * HOP_SECONDS + FRAME_SECONDS + TRIM_MARGIN_SECONDS)))


def _whisper_segments(asr, processor, clip: np.ndarray) -> list[dict]:
    """transformers' timed segments of one piece: ``[{"start", "end", "tokens"}]`` (seconds in the piece)."""
    from ..assets.ct2_whisper import _suppress_in_logits

    fe, gen = processor.feature_extractor, asr.generation_config
    kwargs = {"num_beams": 1, "do_sample": False, "return_timestamps": True, "return_segments": True,
              "max_new_tokens": MAX_TOKENS_PER_WINDOW}
    if clip.size <= fe.n_samples:
        inputs = fe(clip, sampling_rate=fe.sampling_rate, return_tensors="pt")
    else:
        inputs = fe(clip, sampling_rate=fe.sampling_rate, return_tensors="pt", truncation=False, padding="longest",
                    return_attention_mask=True)
        kwargs.update(condition_on_prev_tokens=False, attention_mask=inputs["attention_mask"].to(asr.device))
    suppress = list(gen.suppress_tokens or [])
    suppression = contextlib.nullcontext()
    if suppress and getattr(gen, "no_speech_threshold", None) is None:  # as assets.ct2_whisper.transcribe
        kwargs["suppress_tokens"] = None
        suppression = _suppress_in_logits(asr, suppress)
    with torch.inference_mode(), suppression:
        out = asr.generate(inputs["input_features"].to(device=asr.device, dtype=asr.dtype), **kwargs)
    return [{"start": float(seg["start"]), "end": float(seg["end"]), "tokens": torch.as_tensor(seg["tokens"]).tolist()}
            for seg in out["segments"][0]]


def _segments_of_piece(asr, processor, clip: np.ndarray, offset_s: float, end_s: float, ct2=None) -> list[dict]:
    """Whisper's timed segments of one piece (16 kHz), tightened to their loud frames, offset by ``offset_s`` and
    kept under ``end_s``. ``ct2``: the cascade's CTranslate2 decoding (``inference.ct2_asr.Ct2Whisper``, the same
    segments), else transformers'."""
    fe, tokenizer, gen = processor.feature_extractor, processor.tokenizer, asr.generation_config
    found = _whisper_segments(asr, processor, clip) if ct2 is None else ct2.segments(clip, MAX_TOKENS_PER_WINDOW)
    first_special = min(gen.eos_token_id, gen.decoder_start_token_id)  # timestamps and specials lie above the text
    loud = frame_dbfs(clip, fe.sampling_rate) > ENERGY_FLOOR_DBFS
    segments = []
    for seg in found:
        ids = [int(t) for t in seg["tokens"] if int(t) < first_special]
        text = tokenizer.decode(ids, skip_special_tokens=True).strip()
        if not text:
            continue
        start, end = _tighten(float(seg["start"]), float(seg["end"]), loud)
        start = min(offset_s + start, end_s)
        segments.append({"start": round(start, 3), "end": round(max(min(offset_s + end, end_s), start), 3), "text": text})
    return segments


def transcribe_segments(llm: SpeechLLM, audio, sampling_rate: int | None = None,
                        piece_seconds: float = PIECE_SECONDS) -> tuple[Answer, list[dict]]:
    """The timed transcript of a recording of any length: (the Answer, whose text is the segments' texts joined,
    and the segments ``[{"start", "end", "text"}, ...]``, seconds from the recording's start, in order).

    ``audio``: a path, an array (with ``sampling_rate``) or anything ``load_audio`` reads. Audio with no speech
    gives no segments and the Answer's warning says so (as ``SpeechLLM.transcribe``)."""
    from .longform import _AudioSource, plan_from_levels

    rate = llm.processor.layout.sampling_rate
    source = _AudioSource(audio, sampling_rate, rate)
    if source.seconds <= piece_seconds:
        ranges = [(0, source.frames)]
    else:
        ranges = plan_from_levels(source.levels(), source.frames, source.rate, piece_seconds)
    asr, processor = llm._load_asr()  # the checkpoint's own Whisper and its tokenizer (shared with the cascade)
    ct2 = llm._ct2  # its CTranslate2 decoding, where the cascade uses it
    segments, timings, reasons = [], {"speech_check_s": 0.0, "asr_s": 0.0}, []
    for begin, end in ranges:
        clip = source.read(begin, end)
        if llm.speech_check:
            check = llm.check_speech(clip)
            timings["speech_check_s"] += check.check_s
            if not check.speech:
                reasons.append(check.reason)
                continue
        start = time.perf_counter()
        segments += _segments_of_piece(asr, processor, clip, begin / source.rate, end / source.rate, ct2)
        timings["asr_s"] += time.perf_counter() - start
        del clip
    if not llm.speech_check:
        del timings["speech_check_s"]
    warning = None
    if len(reasons) == len(ranges):
        where = str(audio) if isinstance(audio, (str, Path)) else "the audio"
        why = reasons[0] if len(reasons) == 1 else f"in none of its {len(reasons)} pieces"
        warning = f"no speech detected in {where} ({why}); nothing to transcribe"
    text = " ".join(s["text"] for s in segments)
    answer = Answer("transcribe", text, transcript=text, audio_seconds=source.seconds, timings=timings, warning=warning,
                    asr_backend=llm.asr_backend_used)
    return answer, segments


# ---------------------------------------------------------------------------------------------------------
# formats: the one place that writes segments as SRT, WebVTT, JSON or text
# ---------------------------------------------------------------------------------------------------------
def format_timestamp(seconds: float, decimal: str = ",") -> str:
    """``00:00:01,000`` (SRT; ``decimal="."``: WebVTT's ``00:00:01.000``), to the millisecond, hours always."""
    ms = int(round(max(float(seconds), 0.0) * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{ms:03d}"


def _cue_text(text: str) -> str:
    return " ".join(text.split()).replace("-->", "->")  # one line; the arrow would end the cue's timing line


def format_srt(segments: list[dict]) -> str:
    """SubRip: numbered cues ``1\\n00:00:00,000 --> 00:00:07,200\\ntext\\n``, separated by blank lines."""
    return "\n".join(f"{i}\n{format_timestamp(s['start'])} --> {format_timestamp(s['end'])}\n{_cue_text(s['text'])}\n"
                     for i, s in enumerate(segments, start=1))


def format_vtt(segments: list[dict]) -> str:
    """WebVTT: ``WEBVTT``, a blank line, then cues ``00:00:00.000 --> 00:00:07.200\\ntext\\n`` separated by blank lines."""
    cues = [f"{format_timestamp(s['start'], '.')} --> {format_timestamp(s['end'], '.')}\n{_cue_text(s['text'])}\n"
            for s in segments]
    return "WEBVTT\n\n" + "\n".join(cues)


def segments_json(segments: list[dict], text: str | None = None) -> dict:
    """``{"text", "segments": [{"start", "end", "text"}, ...]}`` (text: the segments' texts joined unless given)."""
    return {"text": " ".join(s["text"] for s in segments) if text is None else text,
            "segments": [{"start": s["start"], "end": s["end"], "text": s["text"]} for s in segments]}


def format_segments(segments: list[dict], fmt: str, text: str | None = None) -> str:
    """The segments as ``fmt``: ``txt`` (the text), ``srt``, ``vtt`` or ``json`` (:func:`segments_json`)."""
    if fmt == "srt":
        return format_srt(segments)
    if fmt == "vtt":
        return format_vtt(segments)
    if fmt == "json":
        return json.dumps(segments_json(segments, text), ensure_ascii=False, indent=2) + "\n"
    if fmt == "txt":
        return (segments_json(segments, text)["text"]) + "\n"
    raise ValueError(f"subtitle format must be one of {', '.join(FORMATS)}, got {fmt!r}")


__all__ = ["transcribe_segments", "format_timestamp", "format_srt", "format_vtt", "format_segments", "segments_json",
           "FORMATS", "PIECE_SECONDS"]
