"""What the three modes answer with, and the speech check, without torch (read by inference.speech_llm and by the
llama.cpp route, inference.gguf_cascade)."""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..audio_io import ENERGY_FLOOR_DBFS, HOP_SECONDS, energy_check, frame_dbfs

MODES = ("e2e", "cascade", "text")
# The mode `summarize` / `ask` use unless told: the one whose answers measured best (spoken XSum ROUGE and the
# validation answers' agreement with the text answers: docs/evaluation.md, "Which mode"), until a route that hears
# without recognition beats it.
DEFAULT_MODE = "cascade"
DEFAULT_SUMMARY_PROMPT = "Summarize the following speech in a few sentences:"
# The speech check (check_speech). Energy (audio_io.energy_check, shared with the pipeline): RMS over 25 ms frames
# every 10 ms, MIN_SPEECH_SECONDS of frames louder than ENERGY_FLOOR_DBFS (see audio_io). Whisper: the probability of
# its no-speech token (<|nocaptions|> / <|nospeech|>) after <|startoftranscript|>, on 30 s windows; 0.6 is Whisper's
# own threshold (the generation config's no_speech_threshold where it sets one). Whisper's vote counts only for a
# steady signal: its no-speech token also wins on clear synthetic speech (0.80 on an espeak-ng XSum document), so a
# clip whose loud frames' levels spread (10th to 90th percentile) over STEADY_SPREAD_DB or more is speech whatever
# Whisper says (measured: steady noise 0.8 dB, mains hum 0 dB; speech 20-27 dB; speech at 1 % gain 3.9 dB, which
# Whisper passes).
NO_SPEECH_THRESHOLD = 0.6
STEADY_SPREAD_DB = 6.0
ASR_WINDOW_TOKENS = 224  # the cascade's cap on the tokens Whisper writes per 30 s window
# Who decodes the cascade's Whisper (SpeechLLM.asr_backend): "auto" is CTranslate2 where it can run (the CPU, ctranslate2
# installed, a Whisper whose prompt is fixed: inference.ct2_asr.unavailable), else transformers; either may be forced.
ASR_BACKENDS = ("auto", "ctranslate2", "transformers")
UNTRAINED_WARNING = (
    "this model's audio projector is untrained: end-to-end answers do not reflect the speech yet "
    "(use --mode cascade or a trained checkpoint)"
)


@dataclass
class SpeechCheck:
    """What :meth:`SpeechLLM.check_speech` measured on a clip, and whether it holds speech."""

    speech: bool
    reason: str | None  # why it is not speech (None when it is)
    seconds: float
    loudest_frame_dbfs: float | None  # None: digital silence (every sample 0)
    active_seconds: float  # time in frames louder than ENERGY_FLOOR_DBFS
    level_spread_db: float | None = None  # 10th-90th percentile spread of those frames' levels
    no_speech_prob: float | None = None  # Whisper's, lowest over the windows it read; None: not run or no Whisper
    check_s: float = 0.0  # (in the answer's timings as speech_check_s)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "check_s"}


@dataclass
class Answer:
    mode: str
    text: str
    transcript: str | None = None
    audio_seconds: float | None = None
    timings: dict = field(default_factory=dict)
    warning: str | None = None
    speech: dict | None = None  # the speech check's measurements (SpeechCheck.to_dict()), for audio modes
    # a long recording's segments, in order (inference.longform.summarize_long): {"start_s", "end_s", "text",
    # "transcript"}; None for an answer from one prompt
    chapters: list[dict] | None = None
    # why the LLM stopped writing: "stop" (it ended the answer: end-of-sequence), "length" (max_new_tokens cut it);
    # None where no LLM wrote (no speech, a transcription)
    finish_reason: str | None = None
    # which Whisper transcribed, for the cascade and transcribe: "ctranslate2" (inference.ct2_asr, the same transcripts
    # faster on a CPU) or "transformers" (the reference); None where nothing was transcribed
    asr_backend: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _no_speech(mode: str, audio, clip: np.ndarray, reason: str, timings: dict, stacklevel: int = 3) -> Answer:
    """The answer to a clip with no speech: empty, with a warning naming the audio and the reason."""
    where = str(audio) if isinstance(audio, (str, Path)) else "the audio"
    warning = f"no speech detected in {where} ({reason}); nothing to answer"
    warnings.warn(warning, stacklevel=stacklevel)  # at the caller of the mode
    return Answer(mode, "", transcript=None if mode == "e2e" else "", audio_seconds=len(clip) / 16000, timings=timings,
                  warning=warning)


def _checked(answer: Answer, check: SpeechCheck | None) -> Answer:
    """``answer`` with the speech check's measurements and time."""
    if check is not None:
        answer.speech = answer.speech or check.to_dict()
        answer.timings = {"speech_check_s": check.check_s, **answer.timings}
    return answer


def finish_reason(new_tokens: list[int], max_new_tokens: int, eos_token_id) -> str:
    """Why generation stopped: "stop" when the model ended its answer (its last token is an end-of-sequence token,
    or it wrote fewer than ``max_new_tokens``: another stopping rule), "length" when ``max_new_tokens`` cut it."""
    eos = {int(t) for t in (eos_token_id if isinstance(eos_token_id, (list, tuple)) else [eos_token_id]) if t is not None}
    if new_tokens and int(new_tokens[-1]) in eos:
        return "stop"
    return "length" if len(new_tokens) >= max_new_tokens else "stop"


def check_speech(clip: np.ndarray, rate: int, detector=None) -> SpeechCheck:
    """Whether a 16 kHz clip holds speech: at least MIN_SPEECH_SECONDS of 25 ms frames louder than
    ENERGY_FLOOR_DBFS, and, for a steady signal (levels spread under STEADY_SPREAD_DB) where a Whisper is at hand
    (``detector``: ``(no_speech_prob(window) -> float, threshold, window samples)``), a 30 s window (read in order
    until one passes; windows without loud frames are skipped) whose no-speech probability is under the threshold."""
    start = time.perf_counter()
    reason, levels = energy_check(clip, rate)
    loudest = float(levels.max())
    active = float(np.sum(levels > ENERGY_FLOOR_DBFS) * HOP_SECONDS)
    check = SpeechCheck(reason is None, reason, round(len(clip) / rate, 3),
                        round(loudest, 1) if math.isfinite(loudest) else None, round(active, 2))
    if reason is None:
        loud = levels[levels > ENERGY_FLOOR_DBFS]
        check.level_spread_db = round(float(np.percentile(loud, 90) - np.percentile(loud, 10)), 1)
    if check.speech and check.level_spread_db < STEADY_SPREAD_DB and detector is not None:
        prob, threshold, window = detector
        probs = []
        for begin in range(0, len(clip), window):
            piece = clip[begin : begin + window]
            if not np.any(frame_dbfs(piece, rate) > ENERGY_FLOOR_DBFS):
                continue
            probs.append(prob(piece))
            if probs[-1] < threshold:
                break
        check.no_speech_prob = round(min(probs), 4)
        if check.no_speech_prob >= threshold:
            check.speech, check.reason = False, (
                f"Whisper's no-speech probability {min(probs):.2f} >= {threshold:.2f}: noise or silence")
    check.check_s = time.perf_counter() - start
    return check



def speech_gate(speech_check: bool, check, mode: str, audio, clip: np.ndarray) -> tuple[SpeechCheck | None, Answer | None]:
    """The speech check of a clip (None when turned off: ``speech_check`` False) and, for a clip with no speech, its
    empty answer. ``check(clip)``: the route's own :func:`check_speech`."""
    if not speech_check:
        return None, None
    result = check(clip)
    if result.speech:
        return result, None
    answer = _no_speech(mode, audio, clip, result.reason, {"speech_check_s": result.check_s}, stacklevel=5)
    answer.speech = result.to_dict()
    return result, answer


def e2e_warning(build_info: dict) -> str | None:
    """The warning an e2e answer carries, from the checkpoint's build record (``config.provenance``): the note of a
    trained projector with a known limitation, or UNTRAINED_WARNING where the projector is untrained."""
    return build_info.get("projector_note") or (None if build_info.get("projector_trained", False) else UNTRAINED_WARNING)
