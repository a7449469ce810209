"""``audio_frontend="ctc_pool"``'s options (none): one embedding per given frame span (``audio_spans``, e.g. a word)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .frontend_config import FramesConfig


@dataclass(frozen=True)
class CtcPoolConfig(FramesConfig):
    name: ClassVar[str] = "ctc_pool"
    needs_spans: ClassVar[bool] = True

    def downsampled_length(self, layout, frames: int, num_spans: int | None = None) -> int:
        if num_spans is None or num_spans < 1:
            raise ValueError("audio_frontend='ctc_pool' needs at least one frame span per clip (audio_spans).")
        return int(num_spans)
