"""Three ways to answer a spoken prompt, behind one interface (:class:`SpeechLLM`):

- ``e2e``: the audio goes through the encoder and projector straight into the LLM's prompt;
- ``cascade``: Whisper ASR (the same Whisper model as the encoder) transcribes, then the same LLM reads
  the transcript as text;
- ``text``: the content is given as text (the upper bound the e2e system is distilled towards).

All three build the prompt with the same ``AudioMiniChatProcessor.build_prompt`` and decode greedily
with the same settings, so their outputs are comparable.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..assets.default_build import read_build_info
from ..modeling_audio_minichat import AudioMiniChatForConditionalGeneration
from ..processing_audio_minichat import AudioMiniChatProcessor, load_audio
from ..utils.dtypes import parse_dtype

MODES = ("e2e", "cascade", "text")
DEFAULT_SUMMARY_PROMPT = "Summarize the following speech in a few sentences:"
UNTRAINED_WARNING = (
    "this model's audio projector is untrained: end-to-end answers do not reflect the speech yet "
    "(use --mode cascade or a trained checkpoint)"
)


@dataclass
class Answer:
    mode: str
    text: str
    transcript: str | None = None
    audio_seconds: float | None = None
    timings: dict = field(default_factory=dict)
    warning: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class SpeechLLM:
    """An AudioMiniChat checkpoint plus (lazily) the ASR model of its cascade."""

    def __init__(self, model_dir: str | Path, device: str = "cpu", dtype: str | torch.dtype = "float32"):
        self.model_dir = Path(model_dir)
        self.device = torch.device(device)
        self.dtype = parse_dtype(dtype)
        self.info = read_build_info(self.model_dir)
        self.model = AudioMiniChatForConditionalGeneration.from_pretrained(self.model_dir, dtype=self.dtype)
        self.model.to(self.device).eval()
        self.processor = AudioMiniChatProcessor.from_pretrained(self.model_dir)
        self._asr = None

    @property
    def projector_trained(self) -> bool:
        return bool(self.info.get("projector_trained", False))

    @torch.no_grad()
    def _generate(self, inputs, max_new_tokens: int) -> tuple[str, float, str | None]:
        """The answer, the seconds it took, and what the model read from the audio when its front end reads ASR
        tokens (their text; None otherwise). Audio is embedded once, here, and generation starts from it."""
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        start = time.perf_counter()
        read = None
        if "input_features" in inputs:
            embeds, mask, audio = self.model.embed_inputs(
                inputs["input_ids"], inputs["input_features"].to(self.dtype), inputs["input_features_mask"],
                inputs["audio_window_clip"], inputs.get("audio_spans"), attention_mask=inputs["attention_mask"],
            )
            if audio.token_ids is not None and self.processor.asr_tokenizer is not None:
                read = self.processor.asr_tokenizer.decode(torch.cat(audio.token_ids).tolist(), skip_special_tokens=True).strip()
            inputs = {"input_ids": inputs["input_ids"], "inputs_embeds": embeds, "attention_mask": mask}
        # decoding follows the checkpoint's generation_config.json (the same for all three modes)
        out = self.model.generate(**inputs, max_new_tokens=max_new_tokens)
        elapsed = time.perf_counter() - start
        text = self.processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0]
        return text.strip(), elapsed, read

    # ---- modes -------------------------------------------------------------------------------------
    def e2e(self, audio, prompt: str | None = None, text_position: str = "before", max_new_tokens: int = 128,
            sampling_rate: int | None = None) -> Answer:
        clip = load_audio(audio, sampling_rate, self.processor.layout.sampling_rate)
        inputs = self.processor(text=self.processor.build_prompt(self.processor.audio_with_text(prompt, text_position)), audio=[clip],
                                sampling_rate=self.processor.layout.sampling_rate)
        text, elapsed, read = self._generate(inputs, max_new_tokens)
        # an untrained projector, or a trained one whose build records a known limitation
        warning = self.info.get("projector_note") or (None if self.projector_trained else UNTRAINED_WARNING)
        if warning:
            warnings.warn(warning, stacklevel=2)
        # transcript: what the model read from the speech (its internal ASR decoding as text), where it reads tokens
        return Answer("e2e", text, transcript=read, audio_seconds=len(clip) / 16000, timings={"generate_s": elapsed},
                      warning=warning)

    def text(self, content: str, prompt: str | None = None, text_position: str = "before",
             max_new_tokens: int = 128) -> Answer:
        if not content or not content.strip():
            raise ValueError("text mode needs non-empty content text.")
        built = self.processor.build_prompt(self.processor.audio_with_text(prompt, text_position), transcripts=[content])
        text, elapsed, _ = self._generate(self.processor(text=built), max_new_tokens)
        return Answer("text", text, transcript=content, timings={"generate_s": elapsed})

    def cascade(self, audio, prompt: str | None = None, text_position: str = "before", max_new_tokens: int = 128,
                sampling_rate: int | None = None) -> Answer:
        clip = load_audio(audio, sampling_rate, self.processor.layout.sampling_rate)
        transcript, asr_s = self._transcribe(clip)
        answer = self.text(transcript, prompt, text_position, max_new_tokens)
        answer.mode, answer.audio_seconds = "cascade", len(clip) / 16000
        answer.timings = {"asr_s": asr_s, **answer.timings}
        return answer

    def transcribe(self, audio, sampling_rate: int | None = None) -> Answer:
        clip = load_audio(audio, sampling_rate, self.processor.layout.sampling_rate)
        transcript, asr_s = self._transcribe(clip)
        return Answer("transcribe", transcript, transcript=transcript, audio_seconds=len(clip) / 16000,
                      timings={"asr_s": asr_s})

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
            asr = self.model.asr_model()
            self._asr = (asr, WhisperProcessor(feature_extractor=self.processor.feature_extractor, tokenizer=self.processor.asr_tokenizer))
        return self._asr

    def _transcribe(self, clip: np.ndarray) -> tuple[str, float]:
        from ..assets.ct2_whisper import transcribe

        model, processor = self._load_asr()
        start = time.perf_counter()
        # A cap per 30 s window stops rare Whisper loops on digit strings ("19-0-0-0...") from running away.
        text = transcribe(model, processor, clip, max_new_tokens=224)
        return text, time.perf_counter() - start


__all__ = ["SpeechLLM", "Answer", "MODES", "DEFAULT_SUMMARY_PROMPT", "UNTRAINED_WARNING"]
