"""Recordings of any length: cut at pauses into segments that fit one prompt, summarize each, combine.

:func:`summarize_long` is what ``audio-minichat summarize`` / ``ask`` call. A recording (or, in ``text`` mode, a
text) that fits one LLM prompt is answered by ``llm.run(...)`` itself, the same answer. A longer one is answered
hierarchically:

1. **How long a segment may be** is decided in one place, :func:`segment_capacity`, from the LLM's context
   (``processor.max_context_length``) less the prompt and ``max_new_tokens`` (and a small margin): in ``e2e`` the
   longest audio whose embeddings fit (the processor's own count, ``AudioLayout.num_embeddings``); in ``cascade``
   the audio whose transcript fits at a conservative CASCADE_TOKENS_PER_SECOND; in ``text`` the tokens that fit.
2. **Where to cut**: :func:`plan_segments` balances the segments and cuts each at the quietest stretch (25 ms
   frame energy, smoothed over PAUSE_SMOOTH_SECONDS) within a search window before the hard limit (of pauses
   equally quiet, within 3 dB, the one nearest the balanced target), so a cut lands in a pause between words,
   not inside one. A text is cut at a paragraph, sentence or word boundary.
3. Each segment is **summarized in the chosen mode** with SEGMENT_PROMPT: these are the chapters
   (``Answer.chapters``: ``{"start_s", "end_s", "text", "transcript"}``; text chunks have no times: None).
4. The chapter summaries are **combined by the same frozen LLM in text mode**: the user's prompt (COMBINE_PROMPT)
   is applied to them (in order, separated by blank lines). Summaries too long for one prompt
   are summarized in groups first, level after level, until they fit.

Memory stays bounded: a file soundfile can read is never decoded whole. Its frame energies are measured in blocks
of BLOCK_SECONDS, and each segment is read (seek + read) only when its turn comes and dropped afterwards.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio_io import MIN_SAMPLE_RATE
from ..audio_io import load_audio
from typing import TYPE_CHECKING

from ..audio_io import FRAME_SECONDS, HOP_SECONDS, frame_dbfs
from .answers import DEFAULT_SUMMARY_PROMPT, MODES, Answer

if TYPE_CHECKING:  # (torch-free: the llama.cpp route, inference.gguf_cascade, reads this module too)
    from .speech_llm import SpeechLLM

# Each segment is summarized with SEGMENT_PROMPT; the chapter summaries are then answered with COMBINE_PROMPT, the
# user's prompt itself: on examples/news_2min.wav in 45 s segments (docs/recordings.md) a preamble before it ("The
# text below summarizes the consecutive parts of one recording, in order.") made SmolLM2-135M retell the last
# chapter ("The original text is edited to ..."), the bare prompt summarized the whole.
SEGMENT_PROMPT = "Summarize this part of a longer {noun} in a few sentences:"
COMBINE_PROMPT = "{prompt}"
# Words per second of fast speech (~200 words a minute is 3.3 w/s) times SmolLM2's ~1.3 tokens a word is ~4.5; a
# transcript denser than 6 tokens a second is rare (Whisper itself writes at most 224 tokens per 30 s window).
CASCADE_TOKENS_PER_SECOND = 6.0
# Ordinary speech (~150 words a minute): converts a segment length in seconds to tokens for text mode.
SPOKEN_TOKENS_PER_SECOND = 3.0
CONTEXT_MARGIN_TOKENS = 16  # token counts of pieces joined in a prompt can differ by a token or two
PAUSE_SMOOTH_SECONDS = 0.3  # a pause is a stretch this long of low energy (the mean power of its frames)
PAUSE_SEARCH_FRACTION = 0.25  # search for the pause within this fraction of the segment length around the target ...
PAUSE_SEARCH_MAX_SECONDS = 60.0  # ... and at most this far
MIN_SEGMENT_SECONDS = 1.0
BLOCK_SECONDS = 30.0  # audio read (and measured) in blocks of this length


@dataclass(frozen=True)
class Capacity:
    """What one prompt holds for a mode: content tokens, and (audio modes) seconds of audio. ``inf``: no limit."""

    tokens: float
    seconds: float | None


# ---------------------------------------------------------------------------------------------------------
# times
# ---------------------------------------------------------------------------------------------------------
def _clock(seconds: int, hours: bool) -> str:
    h, rest = divmod(int(seconds), 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if hours else f"{m:02d}:{s:02d}"


def format_time_range(start_s: float, end_s: float, hours: bool | None = None) -> str:
    """``"00:00-04:50"``; with hours when the range reaches an hour: ``"1:02:03-1:05:00"``, ``"0:58:00-1:01:30"``
    (``hours=True``: always, as for every range of a recording that reaches an hour)."""
    start, end = int(round(start_s)), int(round(end_s))
    hours = end >= 3600 if hours is None else hours
    return f"{_clock(start, hours)}-{_clock(end, hours)}"


def format_chapters(chapters: list[dict]) -> str:
    """One line per chapter: ``00:00-04:50 <its summary>`` (a text's parts: ``part 1 <summary>``)."""
    hours = any((c.get("end_s") or 0) >= 3600 - 0.5 for c in chapters)
    lines = []
    for i, c in enumerate(chapters, start=1):
        where = f"part {i}" if c.get("start_s") is None else format_time_range(c["start_s"], c["end_s"], hours)
        lines.append(f"{where} {' '.join(c['text'].split()) or '(no speech)'}")  # one line each
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# where to cut
# ---------------------------------------------------------------------------------------------------------
class _LevelMeter:
    """frame_dbfs over a clip fed in blocks: the same frames (25 ms every 10 ms) as frame_dbfs on the whole clip,
    without holding the clip (or its float64 squares) at once."""

    def __init__(self, rate: int):
        self.rate, self.frame, self.hop = rate, int(FRAME_SECONDS * rate), int(HOP_SECONDS * rate)
        self.carry = np.zeros(0, dtype=np.float32)
        self.parts: list[np.ndarray] = []

    def feed(self, block: np.ndarray) -> None:
        buf = np.concatenate([self.carry, np.asarray(block, dtype=np.float32)])
        count = 1 + (buf.size - self.frame) // self.hop if buf.size >= self.frame else 0
        if count > 0:
            self.parts.append(frame_dbfs(buf[: (count - 1) * self.hop + self.frame], self.rate))
        self.carry = buf[count * self.hop :]

    def levels(self) -> np.ndarray:
        if not self.parts:  # shorter than one frame: frame_dbfs pads it to one
            return frame_dbfs(self.carry, self.rate)
        return np.concatenate(self.parts)


def frame_levels(clip: np.ndarray, rate: int, block_seconds: float = BLOCK_SECONDS) -> np.ndarray:
    """``frame_dbfs(clip, rate)``, computed block by block (bounded memory for long clips)."""
    meter, step = _LevelMeter(rate), max(int(block_seconds * rate), 1)
    for begin in range(0, len(clip), step):
        meter.feed(clip[begin : begin + step])
    return meter.levels()


def plan_from_levels(levels: np.ndarray, num_samples: int, rate: int, max_seconds: float,
                     min_seconds: float = MIN_SEGMENT_SECONDS) -> list[tuple[int, int]]:
    """:func:`plan_segments` from the clip's frame levels (``frame_dbfs``) and length."""
    if not max_seconds > 0:
        raise ValueError(f"the segment length must be > 0 seconds, got {max_seconds}")
    frame, hop = int(FRAME_SECONDS * rate), int(HOP_SECONDS * rate)
    max_len = max(int(max_seconds * rate), hop)
    min_len = min(int(min_seconds * rate), max_len // 2)
    with np.errstate(over="ignore"):
        power = np.power(10.0, np.asarray(levels, dtype=np.float64) / 10.0)  # -inf dB (digital silence) -> 0
    width = max(1, int(round(PAUSE_SMOOTH_SECONDS / HOP_SECONDS)))
    smooth = np.convolve(power, np.ones(width) / width, mode="same") if power.size >= width else power
    search = max(min(PAUSE_SEARCH_FRACTION * max_len, PAUSE_SEARCH_MAX_SECONDS * rate), hop)
    ranges, start = [], 0
    while num_samples - start > max_len:
        remaining = num_samples - start
        target = start + remaining / math.ceil(remaining / max_len)  # balanced: no short last segment
        lo, hi = max(start + min_len, target - search), min(start + max_len, target + search)
        t_lo = max(math.ceil((lo - frame / 2) / hop), 0)
        t_hi = min(math.floor((hi - frame / 2) / hop), smooth.size - 1)
        if t_lo > t_hi:
            cut = int(hi)
        else:
            window = smooth[t_lo : t_hi + 1]
            quiet = window <= 2.0 * window.min() + 1e-12  # within 3 dB of the quietest (or digital silence)
            edges = np.flatnonzero(np.diff(np.concatenate([[0], quiet.astype(np.int8), [0]])))
            middles = (edges[0::2] + edges[1::2] - 1) // 2  # the middle of each such pause
            aim = (target - frame / 2) / hop - t_lo
            middle = int(middles[np.argmin(np.abs(middles - aim))])  # of equally quiet pauses, the nearest the target
            cut = (t_lo + middle) * hop + frame // 2
            cut = int(min(max(cut, math.ceil(lo)), math.floor(hi)))
        ranges.append((start, cut))
        start = cut
    ranges.append((start, num_samples))
    return ranges


def plan_segments(clip: np.ndarray, rate: int, max_seconds: float,
                  min_seconds: float = MIN_SEGMENT_SECONDS) -> list[tuple[int, int]]:
    """Sample ranges ``[(start, end), ...]`` that cover ``clip`` in order without overlap, each at most
    ``max_seconds`` long, cut in the quietest stretch near each boundary (segments balanced in length; each at
    least ``min_seconds`` unless the clip is shorter)."""
    return plan_from_levels(frame_levels(clip, rate), len(clip), rate, max_seconds, min_seconds)


class _AudioSource:
    """A recording read in pieces: a file soundfile opens is read block by block (never whole); anything else
    (arrays, formats only load_audio reads) is loaded once at the model's rate."""

    def __init__(self, audio, sampling_rate: int | None, target_rate: int):
        self.audio, self.target_rate, self.path, self.clip = audio, target_rate, None, None
        if isinstance(audio, (str, os.PathLike)) and os.path.isfile(audio):
            import soundfile as sf

            try:
                info = sf.info(os.fspath(audio))
                if info.frames > 0 and info.samplerate >= MIN_SAMPLE_RATE:  # (else load_audio says what is wrong)
                    self.path, self.rate, self.frames = os.fspath(audio), int(info.samplerate), int(info.frames)
            except Exception:  # a format soundfile cannot open: load_audio reads it (or says why not)
                pass
        if self.path is None:
            self.clip = load_audio(audio, sampling_rate, target_rate)
            self.rate, self.frames = target_rate, len(self.clip)

    @property
    def seconds(self) -> float:
        return self.frames / self.rate

    def _blocks(self, start: int, end: int):
        import soundfile as sf

        step = int(BLOCK_SECONDS * self.rate)
        with sf.SoundFile(self.path) as fh:
            fh.seek(start)
            left = end - start
            while left > 0:
                data = fh.read(min(step, left), dtype="float32", always_2d=True)
                if not len(data):
                    break
                left -= len(data)
                yield data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]

    def levels(self) -> np.ndarray:
        if self.clip is not None:
            return frame_levels(self.clip, self.rate)
        meter = _LevelMeter(self.rate)
        for block in self._blocks(0, self.frames):
            meter.feed(block)
        return meter.levels()

    def read(self, start: int, end: int) -> np.ndarray:
        """Samples ``start:end`` (of the source's rate) as float32 mono at the model's rate."""
        if self.clip is not None:
            return self.clip[start:end]
        blocks = list(self._blocks(start, end))
        piece = np.concatenate(blocks) if len(blocks) != 1 else blocks[0]
        del blocks
        where = f"{self.path} ({format_time_range(start / self.rate, end / self.rate)})"
        return load_audio(piece, self.rate, self.target_rate, name=where)


# ---------------------------------------------------------------------------------------------------------
# how much fits
# ---------------------------------------------------------------------------------------------------------
def _count_tokens(llm: SpeechLLM, text: str) -> int:
    return len(llm.processor.tokenizer(text, add_special_tokens=False)["input_ids"])


def _shell_tokens(llm: SpeechLLM, prompt: str | None, text_position: str) -> int:
    """Tokens of the prompt around one audio clip (or text content), the clip itself not counted."""
    processor = llm.processor
    built = processor.build_prompt(processor.audio_with_text(prompt, text_position))
    return _count_tokens(llm, built) - built.count(processor.audio_token)


def segment_capacity(llm: SpeechLLM, mode: str, prompts: list[str | None], max_new_tokens: int = 128,
                     text_position: str = "before") -> Capacity:
    """THE decision of how much one prompt holds in ``mode`` besides the longest of ``prompts`` and the answer.

    tokens: content tokens left in the LLM's context; seconds: in ``e2e`` the longest audio whose embeddings
    (``AudioLayout.num_embeddings``, through the processor) fit in them, in ``cascade`` that many tokens at
    CASCADE_TOKENS_PER_SECOND; None in ``text``. Raises ValueError when the prompt and answer leave no room."""
    limit = llm.processor.max_context_length
    if limit is None:
        return Capacity(math.inf, None if mode == "text" else math.inf)
    shell = max(_shell_tokens(llm, p, text_position) for p in prompts)
    tokens = limit - shell - max_new_tokens - CONTEXT_MARGIN_TOKENS
    if tokens < 2 * CONTEXT_MARGIN_TOKENS:
        raise ValueError(f"the LLM's context of {limit} tokens holds the prompt ({shell} tokens) and {max_new_tokens} "
                         f"new tokens but leaves no room for the recording: use a smaller max_new_tokens (--max-new-tokens)")
    if mode == "text":
        return Capacity(float(tokens), None)
    if mode == "cascade":
        return Capacity(float(tokens), tokens / CASCADE_TOKENS_PER_SECOND)
    rate = llm.processor.layout.sampling_rate
    fits = lambda seconds: llm.processor.num_audio_tokens(int(seconds * rate)) <= tokens  # noqa: E731
    lo, hi = 0.0, 24 * 3600.0
    if fits(hi):
        return Capacity(float(tokens), math.inf)
    for _ in range(40):  # bisection to well under a frame
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return Capacity(float(tokens), math.floor(lo * 100) / 100)


def split_text(llm: SpeechLLM, text: str, max_tokens: int) -> list[str]:
    """``text`` in consecutive pieces of at most ``max_tokens`` tokens (balanced), each cut at a paragraph break,
    else a sentence end, else a space, near its target."""
    enc = llm.processor.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    n, max_tokens = len(offsets), max(int(max_tokens), 1)
    if n <= max_tokens:
        return [text.strip()]

    def score(j: int) -> int:  # cutting before token j
        gap = text[offsets[j - 1][1] : offsets[j][0] + 1]
        before = text[: offsets[j - 1][1]].rstrip()
        return 3 if "\n\n" in gap else 2 if before[-1:] in (".", "!", "?") else 1 if gap[:1].isspace() else 0

    pieces, start = [], 0
    while n - start > max_tokens:
        target = start + math.ceil((n - start) / math.ceil((n - start) / max_tokens))
        lo, hi = max(start + 1, target - max_tokens // 4), min(start + max_tokens, n - 1)
        cut = max(range(lo, hi + 1), key=lambda j: (score(j), -abs(j - target)))
        pieces.append(text[offsets[start][0] : offsets[cut][0]].strip())
        start = cut
    pieces.append(text[offsets[start][0] :].strip())
    return [p for p in pieces if p]


# ---------------------------------------------------------------------------------------------------------
# summarize
# ---------------------------------------------------------------------------------------------------------
def _text_kwargs(on_text) -> dict:
    return {} if on_text is None else {"on_text": on_text}


def _summarize_text(llm: SpeechLLM, content: str, prompt: str, max_new_tokens: int, capacity: Capacity) -> tuple[str, dict]:
    """A summary of ``content`` with ``prompt`` in text mode; content over the capacity is summarized in pieces
    whose summaries are combined (a Whisper transcript denser than CASCADE_TOKENS_PER_SECOND)."""
    if _count_tokens(llm, content) <= capacity.tokens:
        answer = llm.text(content, prompt=prompt, max_new_tokens=max_new_tokens)
        return answer.text, answer.timings
    texts = [llm.text(p, prompt=prompt, max_new_tokens=max_new_tokens).text for p in split_text(llm, content, capacity.tokens)]
    answer = _combine(llm, texts, prompt, "before", max_new_tokens, None, "text")
    return answer.text, answer.timings


def _combine(llm: SpeechLLM, texts: list[str], prompt: str | None, text_position: str, max_new_tokens: int,
             on_text, noun: str) -> Answer:
    """The chapter summaries ``texts`` answered with the user's ``prompt`` in text mode, summarized in groups
    (level after level) while they do not fit one prompt."""
    final = COMBINE_PROMPT.format(noun=noun, prompt=prompt or DEFAULT_SUMMARY_PROMPT)
    group = SEGMENT_PROMPT.format(noun=noun)
    capacity = segment_capacity(llm, "text", [final, group], max_new_tokens, text_position)
    content, start = "\n\n".join(t for t in texts if t), time.perf_counter()
    if not content:  # nothing was said that the LLM summarized
        return Answer("text", "", timings={"combine_s": 0.0})
    while _count_tokens(llm, content) > capacity.tokens:
        pieces = split_text(llm, content, capacity.tokens)
        shorter = "\n\n".join(llm.text(p, prompt=group, max_new_tokens=max_new_tokens).text for p in pieces)
        if _count_tokens(llm, shorter) >= _count_tokens(llm, content):
            raise ValueError(f"the chapter summaries do not get shorter when summarized again; use a smaller "
                             f"max_new_tokens (--max-new-tokens, now {max_new_tokens})")
        content = shorter
    levels_s = time.perf_counter() - start
    answer = llm.text(content, prompt=final, text_position=text_position, max_new_tokens=max_new_tokens,
                      **_text_kwargs(on_text))
    answer.timings = {"combine_s": levels_s + answer.timings.get("generate_s", 0.0)}
    return answer


def _chapter(start_s, end_s, text: str, transcript: str | None) -> dict:
    rounded = lambda v: None if v is None else round(float(v), 3)  # noqa: E731
    return {"start_s": rounded(start_s), "end_s": rounded(end_s), "text": text, "transcript": transcript}


def _add_timings(total: dict, timings: dict) -> None:
    for key, value in timings.items():
        total[key] = total.get(key, 0.0) + value


def summarize_long(llm: SpeechLLM, mode: str, audio=None, content: str | None = None, prompt: str | None = None,
                   max_new_tokens: int = 128, segment_seconds: float | None = None, on_progress=None, on_text=None,
                   text_position: str = "before", sampling_rate: int | None = None, force_chapters: bool = False,
                   segment_tokens: int | None = None) -> Answer:
    """``llm.run(mode, ...)`` for a recording (``audio``) or text (``content``) of any length.

    What fits one prompt (and ``segment_seconds``, when given) is answered by ``llm.run`` itself: the same answer,
    ``chapters`` None (one chapter, the whole, with ``force_chapters``). Anything longer is cut into segments
    (:func:`plan_segments`; text: :func:`split_text`, at ``segment_tokens``, or ``segment_seconds`` of speech at
    SPOKEN_TOKENS_PER_SECOND), each summarized in ``mode`` (the chapters, reported to ``on_progress(i, n,
    chapter)`` as each is done), and the user's prompt is applied to their summaries in text mode.
    ``on_text(piece)`` streams the final answer only."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    if segment_seconds is not None and not segment_seconds > 0:
        raise ValueError(f"the segment length must be > 0 seconds, got {segment_seconds}")
    noun = "text" if mode == "text" else "recording"
    segment_prompt = SEGMENT_PROMPT.format(noun=noun)
    kwargs = dict(prompt=prompt, text_position=text_position, max_new_tokens=max_new_tokens, **_text_kwargs(on_text))
    try:
        capacity = segment_capacity(llm, mode, [prompt, segment_prompt], max_new_tokens, text_position)
    except ValueError:
        # No room for segments: one prompt, whose own checks say what is wrong (empty audio, no speech, the exact
        # context overflow) or answer what fits.
        if mode == "text":
            return llm.text(content, **kwargs)
        return llm.run(mode, audio=audio, sampling_rate=sampling_rate, **kwargs)
    if mode == "text":
        return _summarize_long_text(llm, content, capacity, segment_prompt, kwargs, segment_seconds, segment_tokens,
                                    on_progress, force_chapters)
    source = _AudioSource(audio, sampling_rate, llm.processor.layout.sampling_rate)
    limit = capacity.seconds if segment_seconds is None else min(capacity.seconds, segment_seconds)
    if source.seconds <= limit:
        try:
            answer = llm.run(mode, audio=audio, sampling_rate=sampling_rate, **kwargs)
        except ValueError as exc:  # a transcript denser than CASCADE_TOKENS_PER_SECOND: segments after all
            if mode != "cascade" or "context" not in str(exc):
                raise
            limit = source.seconds / 2
        else:
            if force_chapters:
                answer.chapters = [_chapter(0.0, source.seconds, answer.text, answer.transcript)]
                if on_progress is not None:
                    on_progress(1, 1, answer.chapters[0])
            return answer
    del kwargs
    ranges = plan_from_levels(source.levels(), source.frames, source.rate, limit)
    chapters, timings, warning, transcripts, silent = [], {}, None, [], 0
    for index, (begin, end) in enumerate(ranges, start=1):
        clip = source.read(begin, end)
        if mode == "cascade":
            heard = llm.transcribe(clip, sampling_rate=source.target_rate)
            _add_timings(timings, heard.timings)
            text, transcript = "", heard.text
            if heard.warning is None and heard.text.strip():
                text, used = _summarize_text(llm, heard.text, segment_prompt, max_new_tokens, capacity)
                _add_timings(timings, used)
            else:
                silent += 1
        else:
            answer = llm.e2e(clip, prompt=segment_prompt, max_new_tokens=max_new_tokens, sampling_rate=source.target_rate)
            _add_timings(timings, answer.timings)
            text, transcript = answer.text, answer.transcript
            if answer.speech is not None and not answer.speech.get("speech"):
                silent += 1  # (a silent segment's no-speech warning is no warning for the whole)
            else:
                warning = warning or answer.warning
        del clip
        chapters.append(_chapter(begin / source.rate, end / source.rate, text, transcript))
        transcripts.append(transcript or "")
        if on_progress is not None:
            on_progress(index, len(ranges), chapters[-1])
    where = str(audio) if isinstance(audio, (str, Path)) else "the audio"
    if silent == len(chapters):
        warning = f"no speech detected in {where} (in none of its {len(chapters)} segments); nothing to answer"
    if not any(c["text"] for c in chapters):
        final = Answer(mode, "", timings={})
    else:
        final = _combine(llm, [c["text"] for c in chapters], prompt, text_position, max_new_tokens, on_text, noun)
    timings.update(final.timings)
    return Answer(mode, final.text, transcript="\n".join(transcripts), audio_seconds=source.seconds, timings=timings,
                  warning=warning, chapters=chapters, finish_reason=final.finish_reason,
                  asr_backend=llm.asr_backend_used if mode == "cascade" else None)


def _summarize_long_text(llm, content, capacity, segment_prompt, kwargs, segment_seconds, segment_tokens,
                         on_progress, force_chapters) -> Answer:
    if content is None or not content.strip():
        return llm.text(content, **kwargs)  # its own error
    limit = capacity.tokens
    if segment_tokens is not None:
        limit = min(limit, segment_tokens)
    elif segment_seconds is not None:
        limit = min(limit, max(int(segment_seconds * SPOKEN_TOKENS_PER_SECOND), 1))
    pieces = split_text(llm, content, limit)
    if len(pieces) == 1:
        answer = llm.text(content, **kwargs)
        if force_chapters:
            answer.chapters = [_chapter(None, None, answer.text, content)]
            if on_progress is not None:
                on_progress(1, 1, answer.chapters[0])
        return answer
    chapters, timings = [], {}
    for index, piece in enumerate(pieces, start=1):
        answer = llm.text(piece, prompt=segment_prompt, max_new_tokens=kwargs["max_new_tokens"])
        _add_timings(timings, answer.timings)
        chapters.append(_chapter(None, None, answer.text, piece))
        if on_progress is not None:
            on_progress(index, len(pieces), chapters[-1])
    final = Answer("text", "", timings={})
    if any(c["text"] for c in chapters):
        final = _combine(llm, [c["text"] for c in chapters], kwargs["prompt"], kwargs["text_position"],
                         kwargs["max_new_tokens"], kwargs.get("on_text"), "text")
    timings.update(final.timings)
    return Answer("text", final.text, transcript=content, timings=timings, chapters=chapters,
                  finish_reason=final.finish_reason)


__all__ = ["plan_segments", "plan_from_levels", "frame_levels", "summarize_long", "format_time_range", "format_chapters",
           "segment_capacity", "split_text", "Capacity", "SEGMENT_PROMPT", "COMBINE_PROMPT", "CASCADE_TOKENS_PER_SECOND"]
