"""``downsample="pool"``: average pooling over encoder frames (kernel 8, stride 4 in the paper), projected."""

from __future__ import annotations

import math

import torch

from .frontend_base import EncoderFramesFrontEnd, span_means


class PoolFrontEnd(EncoderFramesFrontEnd):
    name = "pool"

    @classmethod
    def downsampled_length(cls, layout, frames: int, num_spans: int | None = None) -> int:
        return math.ceil(max(frames - layout.pool_kernel, 0) / layout.pool_stride) + 1

    def downsample(self, frames, lengths, counts, spans):
        index = torch.arange(max(counts), device=frames.device).unsqueeze(0)
        starts = (index * self.layout.pool_stride).expand(frames.shape[0], -1)
        return span_means(frames, lengths, starts, starts + self.layout.pool_kernel)
