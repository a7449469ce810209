"""``audio_frontend="asr_tokens"``'s options: how the ASR decoder (Whisper's) is prompted and read, and how many slots
a window gets.

A window of ``s`` seconds has ``ceil(s * audio_tokens_per_second) + 1`` embedding slots (the most tokens it may
decode; the slots its decoding leaves empty are masked out by the model). With ``asr_token_mixture: k > 0`` each
embedding adds the expected LLM input embedding of the decoder's top-k tokens; a token whose text is several LLM
pieces fills one slot per piece, up to ``asr_token_pieces``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from .frontend_config import ASR_DECODER_TYPES, FrontEndConfig, positive_int


def _ids(value) -> tuple[int, ...]:
    return tuple(int(t) for t in value or ())


@dataclass(frozen=True)
class AsrTokensConfig(FrontEndConfig):
    name: ClassVar[str] = "asr_tokens"
    pad_windows: ClassVar[bool] = True  # Whisper's decoder was trained on 30 s inputs
    reads_asr_decoder: ClassVar[bool] = True
    legacy_keys: ClassVar[dict[str, str]] = {"tokens_per_second": "audio_tokens_per_second"}  # old processor layouts

    audio_tokens_per_second: float = 6.0  # embedding slots per second of a window
    # how the decoder is prompted and decoded (read from its generation config by from_asr_model)
    asr_prompt_ids: tuple[int, ...] | None = None
    asr_eos_token_id: int | None = None
    asr_suppress_tokens: tuple[int, ...] = ()
    asr_begin_suppress_tokens: tuple[int, ...] = ()
    asr_token_mixture: int = 0  # k > 0: add the expected LLM embedding of the decoder's top-k tokens; 0: off
    asr_token_pieces: int = 1  # the most LLM pieces an ASR token's text is kept as (with the mixture)

    def __post_init__(self):
        if not self.audio_tokens_per_second > 0:
            raise ValueError(f"audio_tokens_per_second must be positive, got {self.audio_tokens_per_second}.")
        if self.asr_token_mixture < 0:
            raise ValueError(f"asr_token_mixture must be >= 0 (0: off), got {self.asr_token_mixture}.")
        if self.asr_token_pieces < 1:
            raise ValueError(f"asr_token_pieces must be >= 1, got {self.asr_token_pieces}.")
        set_ = object.__setattr__
        set_(self, "audio_tokens_per_second", float(self.audio_tokens_per_second))
        set_(self, "asr_prompt_ids", None if self.asr_prompt_ids is None else _ids(self.asr_prompt_ids))
        set_(self, "asr_eos_token_id", None if self.asr_eos_token_id is None else int(self.asr_eos_token_id))
        set_(self, "asr_suppress_tokens", _ids(self.asr_suppress_tokens))
        set_(self, "asr_begin_suppress_tokens", _ids(self.asr_begin_suppress_tokens))
        set_(self, "asr_token_mixture", int(self.asr_token_mixture))
        set_(self, "asr_token_pieces", positive_int("audio_frontend='asr_tokens'", "asr_token_pieces", self.asr_token_pieces))

    def check(self, config) -> None:
        if config.audio_config.model_type not in ASR_DECODER_TYPES:
            raise ValueError(
                f"audio_frontend='asr_tokens' needs an encoder-decoder ASR model (Whisper); the audio encoder is "
                f"{config.audio_config.model_type!r}."
            )

    def window_token_slots(self, layout, audio_frames: int) -> int:
        """The most tokens (embeddings) a window with ``audio_frames`` feature frames of audio yields."""
        seconds = audio_frames * (layout.mel_hop_length if layout.feature_kind == "mel" else 1) / layout.sampling_rate
        return math.ceil(seconds * self.audio_tokens_per_second) + 1

    def num_embeddings(self, layout, num_samples: int, num_spans: int | None = None) -> int:
        return sum(self.window_token_slots(layout, layout.audio_frames(e - s)) for s, e in layout.split_windows(num_samples))

    @classmethod
    def from_asr_model(cls, asr_model) -> dict:
        """How the ASR model decodes English without timestamps, from its generation config."""
        gen = getattr(asr_model, "generation_config", None)
        if gen is None or not hasattr(asr_model, "get_decoder"):
            raise ValueError("audio_frontend='asr_tokens' needs an encoder-decoder ASR model (e.g. WhisperForConditionalGeneration).")
        prompt = [gen.decoder_start_token_id]
        if getattr(gen, "is_multilingual", False):
            prompt += [gen.lang_to_id["<|en|>"], gen.task_to_id["transcribe"]]
        no_timestamps = getattr(gen, "no_timestamps_token_id", None)
        if no_timestamps is not None:
            prompt.append(no_timestamps)
        eos = gen.eos_token_id[0] if isinstance(gen.eos_token_id, (list, tuple)) else gen.eos_token_id
        return {
            "asr_prompt_ids": prompt,
            "asr_eos_token_id": eos,
            "asr_suppress_tokens": list(getattr(gen, "suppress_tokens", None) or []),
            "asr_begin_suppress_tokens": list(getattr(gen, "begin_suppress_tokens", None) or []),
        }
