"""``audio_frontend="stack"``: ``stack_factor`` consecutive encoder frames concatenated into one, projected.

Options: ``frontend_stack_config.StackConfig``."""

from __future__ import annotations

from torch import nn

from .frontend_base import EncoderFramesFrontEnd
from .frontend_stack_config import StackConfig


class StackFrontEnd(EncoderFramesFrontEnd):
    config_class = StackConfig

    @classmethod
    def projector_input_size(cls, config) -> int:
        return config.audio_config.hidden_size * config.frontend_options.stack_factor

    def downsample(self, frames, lengths, counts, spans):
        k, most = self.options.stack_factor, max(counts)
        if most * k > frames.shape[1]:
            frames = nn.functional.pad(frames, (0, 0, 0, most * k - frames.shape[1]))
        return frames[:, : most * k].reshape(frames.shape[0], most, k * frames.shape[2])
