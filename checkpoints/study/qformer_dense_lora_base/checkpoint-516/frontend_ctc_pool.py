"""``downsample="ctc_pool"``: the mean of the encoder frames of each given span (e.g. a word), projected.

Each clip comes with its spans in seconds (``audio_spans``: CTC word spans, or Whisper's word timestamps,
which the data builder writes with ``word_spans``); one span is one embedding.
"""

from __future__ import annotations

from .frontend_base import EncoderFramesFrontEnd, span_means


class CtcPoolFrontEnd(EncoderFramesFrontEnd):
    name = "ctc_pool"
    needs_spans = True

    @classmethod
    def downsampled_length(cls, layout, frames: int, num_spans: int | None = None) -> int:
        if num_spans is None or num_spans < 1:
            raise ValueError("downsample='ctc_pool' needs at least one frame span per clip (audio_spans).")
        return int(num_spans)

    def downsample(self, frames, lengths, counts, spans):
        most = max(counts)
        return span_means(frames, lengths, spans[:, :most, 0], spans[:, :most, 1])
