"""``audio_frontend="ctc_pool"``: the mean of the encoder frames of each given span (e.g. a word), projected.

Each clip comes with its spans in seconds (``audio_spans``: CTC word spans, or Whisper's word timestamps,
which the data builder writes with ``word_spans``); one span is one embedding. Options (none):
``frontend_ctc_pool_config.CtcPoolConfig``.
"""

from __future__ import annotations

from .frontend_base import EncoderFramesFrontEnd, span_means
from .frontend_ctc_pool_config import CtcPoolConfig


class CtcPoolFrontEnd(EncoderFramesFrontEnd):
    config_class = CtcPoolConfig

    def downsample(self, frames, lengths, counts, spans):
        most = max(counts)
        return span_means(frames, lengths, spans[:, :most, 0], spans[:, :most, 1])
