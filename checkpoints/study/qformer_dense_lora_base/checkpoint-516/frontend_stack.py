"""``downsample="stack"``: ``stack_factor`` consecutive encoder frames concatenated into one, projected."""

from __future__ import annotations

import math

from torch import nn

from .frontend_base import EncoderFramesFrontEnd


class StackFrontEnd(EncoderFramesFrontEnd):
    name = "stack"

    @classmethod
    def projector_input_size(cls, config) -> int:
        return config.audio_config.hidden_size * config.stack_factor

    @classmethod
    def downsampled_length(cls, layout, frames: int, num_spans: int | None = None) -> int:
        return math.ceil(frames / layout.stack_factor)

    def downsample(self, frames, lengths, counts, spans):
        k, most = self.layout.stack_factor, max(counts)
        if most * k > frames.shape[1]:
            frames = nn.functional.pad(frames, (0, 0, 0, most * k - frames.shape[1]))
        return frames[:, : most * k].reshape(frames.shape[0], most, k * frames.shape[2])
