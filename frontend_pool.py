"""``audio_frontend="pool"``: average pooling over encoder frames (kernel 8, stride 4 in the paper), projected.

Options: ``frontend_pool_config.PoolConfig``."""

from __future__ import annotations

import torch

from .frontend_base import EncoderFramesFrontEnd, span_means
from .frontend_pool_config import PoolConfig


class PoolFrontEnd(EncoderFramesFrontEnd):
    config_class = PoolConfig

    def downsample(self, frames, lengths, counts, spans):
        index = torch.arange(max(counts), device=frames.device).unsqueeze(0)
        starts = (index * self.options.pool_stride).expand(frames.shape[0], -1)
        return span_means(frames, lengths, starts, starts + self.options.pool_kernel)
