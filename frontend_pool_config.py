"""``audio_frontend="pool"``'s options: average pooling over encoder frames (kernel 8, stride 4 in the paper)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from .frontend_config import FramesConfig, positive_int


@dataclass(frozen=True)
class PoolConfig(FramesConfig):
    name: ClassVar[str] = "pool"
    pool_kernel: int = 8  # encoder frames averaged per embedding
    pool_stride: int = 4  # encoder frames between the starts of two embeddings

    def __post_init__(self):
        for option in ("pool_kernel", "pool_stride"):
            object.__setattr__(self, option, positive_int("audio_frontend='pool'", option, getattr(self, option)))

    def downsampled_length(self, layout, frames: int, num_spans: int | None = None) -> int:
        return math.ceil(max(frames - self.pool_kernel, 0) / self.pool_stride) + 1
