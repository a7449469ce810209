"""``audio_frontend="qformer"``'s options: ``qformer_queries`` learned queries per full encoder window (30 s).

A window gets ``max(1, ceil(qformer_queries * f / F))`` queries, ``f`` its audio's feature frames and ``F`` a full
window's; a clip's embeddings are its windows' in order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from .frontend_config import ASR_DECODER_TYPES, FrontEndConfig, positive_int


@dataclass(frozen=True)
class QFormerConfig(FrontEndConfig):
    name: ClassVar[str] = "qformer"
    legacy_keys: ClassVar[dict[str, str]] = {"queries_per_window": "qformer_queries"}  # old processor layouts
    qformer_queries: int = 100  # learned queries per full window; a shorter window gets its share (at least one)

    def __post_init__(self):
        object.__setattr__(self, "qformer_queries", positive_int("audio_frontend='qformer'", "qformer_queries", self.qformer_queries))

    def check(self, config) -> None:
        if config.audio_config.model_type not in ASR_DECODER_TYPES:
            raise ValueError(
                f"audio_frontend='qformer' reads the encoder with its ASR decoder (Whisper); the audio encoder is "
                f"{config.audio_config.model_type!r}."
            )
        most = int(getattr(config.audio_config, "max_target_positions", 448))
        if self.qformer_queries > most:
            raise ValueError(f"qformer_queries must be between 1 and the decoder's {most} positions, got {self.qformer_queries}.")

    def queries_for(self, layout, audio_frames: int) -> int:
        """Queries of a window whose audio fills ``audio_frames`` feature frames (the processor's feature mask)."""
        return max(1, math.ceil(self.qformer_queries * audio_frames / layout.audio_frames(layout.window_samples)))

    def num_embeddings(self, layout, num_samples: int, num_spans: int | None = None) -> int:
        return sum(self.queries_for(layout, layout.audio_frames(end - start)) for start, end in layout.split_windows(num_samples))
