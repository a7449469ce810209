"""Three ways to answer a spoken prompt, behind one interface (:class:`SpeechLLM`):

- ``e2e``: the audio goes through the encoder and projector straight into the LLM's prompt;
- ``cascade``: Whisper ASR (the same Whisper model as the encoder) transcribes, then the same LLM reads
  the transcript as text;
- ``text``: the content is given as text (the upper bound the e2e system is distilled towards).

All three build the prompt with the same ``AudioMiniChatProcessor.build_prompt`` and decode greedily
with the same settings, so their outputs are comparable.

Audio with no speech is not answered: before the LLM runs, :meth:`SpeechLLM.check_speech` looks for speech
(energy over 25 ms frames, then, where the checkpoint holds Whisper's decoder, Whisper's own no-speech
probability); a clip without any gives an empty answer with a ``no speech detected in ...`` warning.
"""

from __future__ import annotations

import copy
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from transformers import TextStreamer

from ..assets.default_build import checkpoint_problem, read_build_info
from ..audio_io import (  # noqa: F401 - FRAME_SECONDS, HOP_SECONDS, BLOCK_FRAMES: also read from here
    BLOCK_FRAMES,
    ENERGY_FLOOR_DBFS,
    FRAME_SECONDS,
    HOP_SECONDS,
    MIN_SPEECH_SECONDS,
    energy_check,
    frame_dbfs,
)
from ..modeling_audio_minichat import AudioMiniChatForConditionalGeneration
from ..audio_io import load_audio
from .answers import (  # noqa: F401 - also read from here
    ASR_BACKENDS, ASR_WINDOW_TOKENS, NO_SPEECH_THRESHOLD, STEADY_SPREAD_DB, Answer, SpeechCheck, _checked, _no_speech,
    DEFAULT_MODE, DEFAULT_SUMMARY_PROMPT, MODES, UNTRAINED_WARNING, check_speech, e2e_warning, finish_reason, speech_gate)
from ..processing_audio_minichat import AudioMiniChatProcessor
from ..utils.cpu_features import FP16_WEIGHTS, fp16_weight_linears, llm_plan

def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device`` that exists on this machine, or a ValueError saying why not (one line)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device {str(device)!r} is not a device name: use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this PyTorch is built without CUDA" if torch.version.cuda is None else "no NVIDIA GPU or driver is found"
            raise ValueError(f"device {str(device)!r}: no CUDA GPU is available on this machine ({why}); use --device cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"device {str(device)!r}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
        return dev
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device {str(device)!r}: Apple's MPS is not available on this machine; use --device cpu")
        return dev
    try:
        torch.empty(1, device=dev)
    except Exception as exc:  # noqa: BLE001 - each backend raises its own type
        raise ValueError(f"device {str(device)!r} cannot be used here ({str(exc).splitlines()[0]}); use --device cpu") from None
    return dev


class _PieceStreamer(TextStreamer):
    """Hands each newly decoded piece of the answer to ``on_text`` (transformers' TextStreamer: it decodes the answer's
    tokens so far and passes on the new text at word boundaries, the rest at the end; the prompt is skipped)."""

    def __init__(self, tokenizer, on_text):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self._on_text = on_text

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self._on_text(text)


class SpeechLLM:
    """An AudioMiniChat checkpoint plus (lazily) the ASR model of its cascade.

    ``check_speech=False`` answers every clip, speech or not (see :meth:`check_speech`). Each mode takes
    ``on_text``: a callable given each newly decoded piece of the answer as it is generated (from the generating
    thread); the pieces, joined and stripped, are ``Answer.text``.

    ``asr_backend`` (one of ASR_BACKENDS; set it before the first transcription): who decodes the cascade's
    Whisper. The transcripts are the same (tests/test_ct2_asr.py); answers name the one that ran. ``ct2_asr``: an
    ``inference.ct2_asr.Ct2Whisper`` of this checkpoint made before (``ct2_asr.cached_folder``), used where
    CTranslate2 runs."""

    asr_backend = "auto"

    def __init__(self, model_dir: str | Path, device: str = "cpu", dtype: str | torch.dtype = "float32",
                 check_speech: bool = True, ct2_asr=None):
        self.model_dir = Path(model_dir)
        self.device = resolve_device(device)
        # dtype "auto": how the weights are held is decided from this processor (utils.cpu_features.choose_llm_plan)
        plan = llm_plan(dtype, self.device.type)
        self.dtype, self.llm_quantization, self.plan_reason = plan.dtype, plan.quantization, plan.reason
        self.speech_check = check_speech
        problem = checkpoint_problem(self.model_dir) if (self.model_dir / "config.json").is_file() else None
        if problem is not None:  # a cut or missing file: one line, not a traceback from deep in loading
            raise ValueError(f"{str(self.model_dir)!r} is not a complete checkpoint: {problem}")
        self.info = read_build_info(self.model_dir)
        self.model = AudioMiniChatForConditionalGeneration.from_pretrained(self.model_dir, dtype=self.dtype)
        self.model.to(self.device).eval()
        if self.llm_quantization == FP16_WEIGHTS:  # the LLM's linear layers only (the front end stays as loaded)
            fp16_weight_linears(self.model.language_model)
        self.processor = AudioMiniChatProcessor.from_pretrained(self.model_dir)
        self._asr = None
        self._ct2 = None  # the cascade's Whisper decoding in CTranslate2 (inference.ct2_asr), where it runs: _load_asr
        self._ct2_given = ct2_asr  # one started already from this checkpoint's folder (the CLI's prefetch), if any
        self._whisper = None  # (model, <|startoftranscript|> id, no-speech token id, threshold), or False: none

    @property
    def projector_trained(self) -> bool:
        return bool(self.info.get("projector_trained", False))

    def _check_context(self, prompt_tokens: int, max_new_tokens: int) -> None:
        limit = self.processor.max_context_length
        if limit is None or prompt_tokens + max_new_tokens <= limit:
            return
        if prompt_tokens >= limit:
            raise ValueError(f"the prompt is {prompt_tokens} tokens (audio included) and fills the LLM's context of "
                             f"{limit} tokens, leaving none to answer in: shorten the audio or the text")
        raise ValueError(f"the prompt is {prompt_tokens} tokens (audio included) and {max_new_tokens} new tokens would run "
                         f"past the LLM's context of {limit} tokens: use max_new_tokens (--max-new-tokens) "
                         f"{limit - prompt_tokens} or less, or shorten the audio or the text")

    @torch.no_grad()
    def _generate(self, inputs, max_new_tokens: int, on_text=None) -> tuple[str, float, str | None, str]:
        """The answer, the seconds it took, what the model read from the audio when its front end reads ASR
        tokens (their text; None otherwise), and why generation stopped (:func:`finish_reason`). Audio is embedded
        once, here, and generation starts from it. ``on_text(piece)``: called with each newly decoded piece of the
        answer as it is generated."""
        self._check_context(int(inputs["input_ids"].shape[1]), max_new_tokens)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        start = time.perf_counter()
        read = None
        inputs, audio = self.model.prompt_for_generation(**inputs)  # what generate() does, keeping the front end's output
        if audio is not None and audio.token_ids is not None and self.processor.asr_tokenizer is not None:
            read = self.processor.asr_tokenizer.decode(torch.cat(audio.token_ids).tolist(), skip_special_tokens=True).strip()
        # decoding follows the checkpoint's generation_config.json (the same for all three modes)
        streamer = None if on_text is None else _PieceStreamer(self.processor.tokenizer, on_text)
        out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, streamer=streamer)
        elapsed = time.perf_counter() - start
        new_tokens = out[0, inputs["input_ids"].shape[1] :].tolist()
        text = self.processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0]
        return text.strip(), elapsed, read, finish_reason(new_tokens, max_new_tokens, self.model.generation_config.eos_token_id)

    # ---- is there speech? -----------------------------------------------------------------------------
    def _whisper_detector(self):
        """(Whisper model, start token id, no-speech token id, threshold) where the checkpoint holds Whisper's
        decoder; None otherwise."""
        if self._whisper is None:
            self._whisper = False
            try:
                asr = self._asr[0] if self._asr is not None else self.model.asr_model()
            except ValueError:  # no ASR decoder in this checkpoint: the energy check alone
                return None
            gen = asr.generation_config
            vocab = self.processor.asr_tokenizer.get_vocab() if self.processor.asr_tokenizer is not None else {}
            token = next((vocab[t] for t in ("<|nospeech|>", "<|nocaptions|>") if t in vocab), None)
            if token is None and getattr(gen, "no_timestamps_token_id", None) is not None:
                token = gen.no_timestamps_token_id - 1  # Whisper's vocabulary order (transformers does the same)
            start = getattr(gen, "decoder_start_token_id", None)
            if token is not None and start is not None and hasattr(self.processor.feature_extractor, "n_samples"):
                threshold = getattr(gen, "no_speech_threshold", None) or NO_SPEECH_THRESHOLD
                self._whisper = (asr, int(start), int(token), float(threshold))
        return self._whisper or None

    @torch.no_grad()
    def _no_speech_prob(self, detector, window: np.ndarray) -> float:
        asr, start, token, _ = detector
        fe = self.processor.feature_extractor
        features = fe(window, sampling_rate=fe.sampling_rate, return_tensors="pt")["input_features"]
        encoded = asr.model.encoder(features.to(device=self.device, dtype=self.dtype)).last_hidden_state
        logits = asr(encoder_outputs=(encoded,), decoder_input_ids=torch.tensor([[start]], device=self.device)).logits
        return float(logits[0, -1].float().softmax(-1)[token])

    def check_speech(self, clip: np.ndarray) -> SpeechCheck:
        """Whether a 16 kHz clip holds speech (inference.answers.check_speech), with this checkpoint's Whisper (its
        no-speech probability on 30 s windows) where it holds Whisper's decoder."""
        detector = self._whisper_detector()
        return check_speech(clip, self.processor.layout.sampling_rate, None if detector is None else (
            lambda window: self._no_speech_prob(detector, window), detector[3], self.processor.feature_extractor.n_samples))

    def _speech_gate(self, mode: str, audio, clip: np.ndarray) -> tuple[SpeechCheck | None, Answer | None]:
        """The speech check of a clip (None when turned off) and, for a clip with no speech, its empty answer."""
        return speech_gate(self.speech_check, self.check_speech, mode, audio, clip)

    # ---- modes -------------------------------------------------------------------------------------
    def e2e(self, audio, prompt: str | None = None, text_position: str = "before", max_new_tokens: int = 128,
            sampling_rate: int | None = None, on_text=None) -> Answer:
        clip = load_audio(audio, sampling_rate, self.processor.layout.sampling_rate)
        check, silent = self._speech_gate("e2e", audio, clip)
        if silent is not None:
            return silent
        inputs = self.processor(text=self.processor.build_prompt(self.processor.audio_with_text(prompt, text_position)), audio=[clip],
                                sampling_rate=self.processor.layout.sampling_rate)
        text, elapsed, read, finished = self._generate(inputs, max_new_tokens, on_text)
        # an untrained projector, or a trained one whose build records a known limitation
        warning = e2e_warning(self.info)
        if warning:
            warnings.warn(warning, stacklevel=2)
        # transcript: what the model read from the speech (its internal ASR decoding as text), where it reads tokens
        return _checked(Answer("e2e", text, transcript=read, audio_seconds=len(clip) / 16000,
                               timings={"generate_s": elapsed}, warning=warning, finish_reason=finished), check)

    def text(self, content: str, prompt: str | None = None, text_position: str = "before",
             max_new_tokens: int = 128, on_text=None) -> Answer:
        if not content or not content.strip():
            raise ValueError("text mode needs non-empty content text.")
        built = self.processor.build_prompt(self.processor.audio_with_text(prompt, text_position), transcripts=[content])
        text, elapsed, _, finished = self._generate(self.processor(text=built), max_new_tokens, on_text)
        return Answer("text", text, transcript=content, timings={"generate_s": elapsed}, finish_reason=finished)

    def cascade(self, audio, prompt: str | None = None, text_position: str = "before", max_new_tokens: int = 128,
                sampling_rate: int | None = None, on_text=None) -> Answer:
        clip = load_audio(audio, sampling_rate, self.processor.layout.sampling_rate)
        check, silent = self._speech_gate("cascade", audio, clip)
        if silent is not None:
            return silent
        transcript, asr_s = self._transcribe(clip)
        if not transcript.strip():  # nothing for the LLM to read: the same empty answer
            return _checked(_no_speech("cascade", audio, clip, "Whisper transcribed no words", {"asr_s": asr_s}), check)
        answer = self.text(transcript, prompt, text_position, max_new_tokens, on_text)
        answer.mode, answer.audio_seconds, answer.asr_backend = "cascade", len(clip) / 16000, self.asr_backend_used
        answer.timings = {"asr_s": asr_s, **answer.timings}
        if self._ct2 is not None and self._ct2.last_waited != asr_s:  # transcribed ahead (Ct2Whisper.prefetch)
            answer.timings["asr_wait_s"] = self._ct2.last_waited
        return _checked(answer, check)

    def transcribe(self, audio, sampling_rate: int | None = None) -> Answer:
        clip = load_audio(audio, sampling_rate, self.processor.layout.sampling_rate)
        check, silent = self._speech_gate("transcribe", audio, clip)
        if silent is not None:
            return silent
        transcript, asr_s = self._transcribe(clip)
        return _checked(Answer("transcribe", transcript, transcript=transcript, audio_seconds=len(clip) / 16000,
                               timings={"asr_s": asr_s}, asr_backend=self.asr_backend_used), check)

    def run(self, mode: str, audio=None, content: str | None = None, **kwargs) -> Answer:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
        if mode == "text":
            return self.text(content, **{k: v for k, v in kwargs.items() if k != "sampling_rate"})
        return getattr(self, mode)(audio, **kwargs)

    # ---- ASR ---------------------------------------------------------------------------------------
    def _load_asr(self):
        """The checkpoint's own encoder and ASR decoder as Whisper, with its ASR tokenizer (nothing loaded again)."""
        if self._asr is None:
            from transformers import WhisperProcessor

            if self.processor.asr_tokenizer is None:
                raise FileNotFoundError(
                    f"{self.model_dir}: this checkpoint holds no ASR tokenizer for the cascade (asr_tokenizer/); "
                    "build it with `audio-minichat build-default` or assets.default_build.build_model."
                )
            detector = self._whisper_detector()
            asr = detector[0] if detector else self.model.asr_model()
            # The cap per 30 s window as the decoder's max_length (its prompt, <|startoftranscript|> ... <|notimestamps|>,
            # plus ASR_WINDOW_TOKENS): passing max_new_tokens makes transformers warn "Both `max_new_tokens` and
            # `max_length` seem to have been set" on every call (Whisper fills in a max_length itself)
            gen = asr.generation_config = copy.deepcopy(asr.generation_config)
            gen.max_length = ASR_WINDOW_TOKENS + 2 + (2 if getattr(gen, "is_multilingual", False) else 0)
            processor = WhisperProcessor(feature_extractor=self.processor.feature_extractor, tokenizer=self.processor.asr_tokenizer)
            self._ct2 = self._ct2_asr(asr, processor)
            self._asr = (asr, processor)
        return self._asr

    def _ct2_asr(self, asr, processor):
        """The cascade's Whisper decoding in CTranslate2 (inference.ct2_asr.Ct2Whisper, on torch's CPU threads) where
        ``asr_backend`` allows it and it can run here, else None (transformers' Whisper)."""
        if self.asr_backend not in ASR_BACKENDS:
            raise ValueError(f"asr_backend must be one of {', '.join(ASR_BACKENDS)}, got {self.asr_backend!r}")
        if self.asr_backend == "transformers":
            return None
        from .ct2_asr import Ct2Whisper, unavailable

        why = unavailable(asr) if self.device.type == "cpu" else f"it runs on the CPU only, not {self.device}"
        if why is None:
            if self._ct2_given is not None:
                self._ct2_given.later_threads = torch.get_num_threads()
                return self._ct2_given
            try:
                return Ct2Whisper.from_model(asr, processor, self.model_dir, threads=torch.get_num_threads())
            except (OSError, RuntimeError) as exc:  # e.g. no room for its temporary folder
                if self.asr_backend == "ctranslate2":
                    raise
                warnings.warn(f"CTranslate2 could not load this checkpoint's Whisper ({str(exc).splitlines()[0]}); "
                              "transcribing with transformers", stacklevel=4)
                return None
        if self.asr_backend == "ctranslate2":
            raise ValueError(f"asr_backend 'ctranslate2' cannot decode this checkpoint's Whisper: {why}")
        return None

    @property
    def asr_backend_used(self) -> str | None:
        """Who decodes the cascade's Whisper: "ctranslate2" or "transformers" (None until it is loaded)."""
        from .ct2_asr import BACKEND, REFERENCE

        return None if self._asr is None else BACKEND if self._ct2 is not None else REFERENCE

    @property
    def asr_compute_type(self) -> str | None:
        """The CTranslate2 Whisper's compute type where it decodes the cascade (float32, the reference), else None."""
        return None if self._ct2 is None else self._ct2.compute_type

    def _transcribe(self, clip: np.ndarray) -> tuple[str, float]:
        from ..assets.ct2_whisper import transcribe

        model, processor = self._load_asr()
        start = time.perf_counter()
        # A cap per 30 s window (ASR_WINDOW_TOKENS, the generation config's max_length: _load_asr) stops rare Whisper
        # loops on digit strings ("19-0-0-0...") from running away. CTranslate2, where it runs, decodes the same.
        if self._ct2 is None:
            return transcribe(model, processor, clip), time.perf_counter() - start
        text = self._ct2.transcribe(clip)
        return text, self._ct2.last_seconds  # (its own time, where it ran ahead: Ct2Whisper.prefetch)


__all__ = ["SpeechLLM", "Answer", "SpeechCheck", "MODES", "DEFAULT_MODE", "DEFAULT_SUMMARY_PROMPT", "UNTRAINED_WARNING", "resolve_device",
           "frame_dbfs", "finish_reason"]
