"""The cascade, the text mode and the soft cascade's e2e without torch (issue 26): Whisper in CTranslate2
(inference.ct2_asr, the same transcripts as the transformers Whisper; inference.ct2_soft_tokens, the same e2e
embeddings as frontend_asr_tokens) and the LLM in llama.cpp from the checkpoint's GGUF file (inference.gguf_llm), which
reads e2e's embeddings in place of its audio placeholder. :class:`GgufSpeechLLM` answers as ``SpeechLLM`` does for
these modes (same prompt, same speech check, same :class:`~.answers.Answer`), in a fraction of its memory and
start-up time.

While Whisper transcribes a clip (in a thread, window by window), the LLM evaluates the prompt so far: its
beginning and the transcript's first windows. When the transcript is complete, only what is new is evaluated
(GgufLLM keeps the longest prefix it shares with the whole prompt), so the answer does not depend on it.

It is what ``--llm-backend auto`` runs on the CPU where :func:`unavailable` finds nothing missing; ``SpeechLLM``
(transformers) is the reference and runs every other e2e front end.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

from ..audio_io import load_audio
from .ct2_asr import SETTINGS
from ..assets.builds import read_build_info
from .answers import NO_SPEECH_THRESHOLD, Answer, _checked, _no_speech, check_speech, e2e_warning, speech_gate
from .gguf_llm import BACKEND, GgufLLM, TextPrompts
from .gguf_llm import unavailable as llm_unavailable

MODES = ("cascade", "text", "transcribe", "e2e")
_SENTINEL = "\u0000"  # where the transcript goes in the rendered prompt (the prefill's prompt so far)


def unavailable(model_dir: str | os.PathLike, mode: str | None, device: str | None = "cpu") -> str | None:
    """Why :class:`GgufSpeechLLM` cannot run ``mode`` for this checkpoint here (one line), or None."""
    if mode not in MODES:
        return f"it runs the cascade, the text mode and e2e only, not {mode}"
    if device not in (None, "cpu"):
        return f"it runs on the CPU only, not {device}"
    import importlib.util

    if importlib.util.find_spec("ctranslate2") is None:
        return "ctranslate2 is not installed"
    from .ct2_asr import cached_folder

    folder = cached_folder(model_dir)
    if mode != "text" and folder is None:
        return "the checkpoint's CTranslate2 Whisper folder is not written yet (the first cascade writes it)"
    if mode == "e2e":
        from .ct2_soft_tokens import unavailable as soft_unavailable

        why = soft_unavailable(model_dir, folder)
        if why is not None:
            return why
    return llm_unavailable(model_dir)


class GgufSpeechLLM:
    """``cascade`` / ``text`` / ``transcribe`` of a checkpoint with neither torch nor transformers' models (see the
    module's text). ``ct2_asr``: a ``Ct2Whisper`` of this checkpoint started before (the CLI's prefetch)."""

    llm_backend = BACKEND
    asr_backend_used = "ctranslate2"
    dtype = None  # (the LLM's weights are the GGUF file's: llm_quantization)

    def __init__(self, model_dir: str | os.PathLike, threads: int = 1, check_speech: bool = True, ct2_asr=None):
        from .ct2_asr import cached_folder, fast_compute_type
        from .ct2_soft_tokens import read_front_end

        self.model_dir = Path(model_dir)
        self.llm = GgufLLM(self.model_dir, threads)
        self.llm_quantization = f"gguf:{self.llm.gguf.name}"
        self.speech_check = check_speech
        self.asr_compute_type = fast_compute_type()
        if ct2_asr is not None and ct2_asr.compute_type != self.asr_compute_type:  # (started for the other route)
            ct2_asr.stop_prefetch()
            ct2_asr = None
        self._folder = ct2_asr.folder if ct2_asr is not None else cached_folder(self.model_dir)
        self._asr = ct2_asr  # the cascade's Whisper, loaded when a clip first needs it (the text mode never does)
        self._soft = None  # e2e's embeddings (inference.ct2_soft_tokens.SoftTokens), made on its first clip
        if ct2_asr is not None:
            ct2_asr.later_threads = threads
        self._rate = 16000 if self._folder is None else int(
            json.loads((Path(self._folder) / SETTINGS).read_text(encoding="utf-8"))["sampling_rate"])
        self.threads = threads
        # what inference.longform reads; e2e's front end read only where an e2e prompt is measured
        self.processor = TextPrompts(self.llm, self._rate, lambda: read_front_end(self.model_dir))

    # ---- the speech check ----------------------------------------------------------------------------
    def check_speech(self, clip):
        threshold = self.asr.settings.get("no_speech_threshold") or NO_SPEECH_THRESHOLD
        return check_speech(clip, self._rate, (self.asr.no_speech_prob, threshold, self.asr.n_samples))

    @property
    def asr(self):
        """The checkpoint's Whisper in CTranslate2 (inference.ct2_asr.Ct2Whisper), loaded on first use."""
        if self._asr is None:
            if self._folder is None:
                raise ValueError(f"{self.model_dir}: the checkpoint's CTranslate2 Whisper folder is not written yet "
                                 "(the first cascade with --llm-backend transformers writes it)")
            from .ct2_asr import Ct2Whisper

            self._asr = Ct2Whisper(self._folder, self.threads, compute_type=self.asr_compute_type)
        return self._asr

    def _load(self, audio, sampling_rate, mode):
        clip = load_audio(audio, sampling_rate, self._rate)
        return clip, *speech_gate(self.speech_check, self.check_speech, mode, audio, clip)

    # ---- modes -----------------------------------------------------------------------------------------
    def text(self, content: str, prompt: str | None = None, text_position: str = "before", max_new_tokens: int = 128,
             on_text=None) -> Answer:
        if not content or not content.strip():
            raise ValueError("text mode needs non-empty content text.")
        text, elapsed, finished, timings = self.llm.generate(self.llm.prompt(content, prompt, text_position),
                                                             max_new_tokens, on_text)
        return Answer("text", text, transcript=content, timings={"generate_s": elapsed, **timings}, finish_reason=finished)

    def cascade(self, audio, prompt: str | None = None, text_position: str = "before", max_new_tokens: int = 128,
                sampling_rate: int | None = None, on_text=None) -> Answer:
        clip, check, silent = self._load(audio, sampling_rate, "cascade")
        if silent is not None:
            return silent
        start = time.perf_counter()
        self.asr.start(clip)  # transcribed in a thread (unless it is already), so that the LLM reads each window as it comes
        head = self.llm.prompt(_SENTINEL, prompt, text_position).split(_SENTINEL)[0]
        # the prompt so far on the threads Whisper leaves (one, beside it, on 2 cores: measured best, docs/cpu-speed.md)
        self.llm.batch_threads(max(1, self.threads - 1))
        try:
            for partial in self.asr.follow(clip):
                self.llm.prefill(head + partial)
        finally:
            self.llm.batch_threads()
        transcript = self.asr.transcribe(clip)
        asr_s = self.asr.last_seconds
        waited = time.perf_counter() - start
        if not transcript.strip():
            return _checked(_no_speech("cascade", audio, clip, "Whisper transcribed no words", {"asr_s": asr_s}), check)
        answer = self.text(transcript, prompt, text_position, max_new_tokens, on_text)
        answer.mode, answer.audio_seconds, answer.asr_backend = "cascade", len(clip) / self._rate, self.asr_backend_used
        answer.timings = {"asr_s": asr_s, "asr_wait_s": waited, **answer.timings}
        return _checked(answer, check)

    def e2e(self, audio, prompt: str | None = None, text_position: str = "before", max_new_tokens: int = 128,
            sampling_rate: int | None = None, on_text=None) -> Answer:
        """The soft cascade (the default's e2e): Whisper's top-k mixtures of the LLM's own embeddings
        (inference.ct2_soft_tokens), read by the LLM in place of the audio placeholder."""
        clip, check, silent = self._load(audio, sampling_rate, "e2e")
        if silent is not None:
            return silent
        if self._soft is None:
            from .ct2_soft_tokens import SoftTokens

            self._soft = SoftTokens(self.model_dir, self.asr)
        self.asr.stop_prefetch()  # (a cascade's transcript, which e2e does not read)
        embeddings, tokens = self._soft.read(clip)
        head, tail = self.llm.audio_prompt(prompt, text_position)
        text, elapsed, finished, timings = self.llm.generate_parts([head, embeddings, tail], max_new_tokens, on_text)
        warning = e2e_warning(read_build_info(self.model_dir))
        if warning:
            warnings.warn(warning, stacklevel=2)
        # transcript: what the LLM read from the speech (the ASR tokens behind its embeddings), as SpeechLLM.e2e's
        return _checked(Answer("e2e", text, transcript=self.asr.decode_text(tokens).strip(), audio_seconds=len(clip) / self._rate,
                               timings={"asr_s": self._soft.last_seconds, "generate_s": elapsed, **timings},
                               warning=warning, finish_reason=finished), check)

    def transcribe(self, audio, sampling_rate: int | None = None) -> Answer:
        clip, check, silent = self._load(audio, sampling_rate, "transcribe")
        if silent is not None:
            return silent
        transcript = self.asr.transcribe(clip)
        return _checked(Answer("transcribe", transcript, transcript=transcript, audio_seconds=len(clip) / self._rate,
                               timings={"asr_s": self.asr.last_seconds}, asr_backend=self.asr_backend_used), check)

    def run(self, mode: str, audio=None, content: str | None = None, **kwargs) -> Answer:
        if mode == "text":
            return self.text(content, **{k: v for k, v in kwargs.items() if k != "sampling_rate"})
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
        return getattr(self, mode)(audio, **kwargs)


__all__ = ["GgufSpeechLLM", "unavailable", "MODES"]
