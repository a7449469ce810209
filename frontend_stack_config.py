"""``audio_frontend="stack"``'s options: ``stack_factor`` consecutive encoder frames concatenated into one embedding."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from .frontend_config import FramesConfig, positive_int


@dataclass(frozen=True)
class StackConfig(FramesConfig):
    name: ClassVar[str] = "stack"
    stack_factor: int = 4  # encoder frames concatenated per embedding

    def __post_init__(self):
        object.__setattr__(self, "stack_factor", positive_int("audio_frontend='stack'", "stack_factor", self.stack_factor))

    def downsampled_length(self, layout, frames: int, num_spans: int | None = None) -> int:
        return math.ceil(frames / self.stack_factor)
