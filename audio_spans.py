"""Frame spans (``audio_spans``: per clip, ``[start_s, end_s]`` pairs, e.g. one per word), checked in one place.

The processor checks what callers give it, the data builder what it writes, the training collator what a data set
holds: all with :func:`check_spans`; :func:`span_frames` turns checked spans into the encoder frames a front end
pools (shipped with the checkpoint's remote code).
"""

from __future__ import annotations

import math
import numbers
from typing import Optional

import torch


def check_spans(spans, duration: float | None = None, ordered: bool = True, slack: float = 1e-6) -> Optional[str]:
    """Why ``spans`` is not a valid span list for a clip of ``duration`` seconds (None when it is): a non-empty
    list of ``[start_s, end_s]`` with ``0 <= start < end <= duration + slack`` (no upper bound when ``duration`` is
    None), each starting where the one before ends or later when ``ordered``."""
    if hasattr(spans, "tolist"):
        spans = spans.tolist()
    if not isinstance(spans, (list, tuple)) or not spans:
        return f"expected a non-empty list of [start_s, end_s] spans, got {spans!r}"
    limit = math.inf if duration is None else duration + slack
    prev_end = 0.0
    for j, span in enumerate(spans):
        if not isinstance(span, (list, tuple)) or len(span) != 2:
            return f"span {j} is not a [start_s, end_s] pair: {span!r}"
        start, end = span
        if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in (start, end)):
            return f"span {j} has a non-finite or non-numeric time: {span!r}"
        if not 0.0 <= start < end <= limit:
            where = "" if duration is None else f" [0, {duration:.3f}] s"
            return f"span {j} = {list(span)} is empty or outside the clip{where}"
        if ordered and start < prev_end - 1e-6:
            return f"span {j} = {list(span)} starts before the previous span ends ({prev_end:.3f} s)"
        prev_end = end
    return None


def span_frames(audio_spans, seconds_per_frame: float) -> torch.Tensor:
    """Per clip, spans in seconds -> (clips, most spans, 2) encoder-frame ``[first, end)`` indices, -1 padded (each
    clip's spans checked first; a span covers at least one frame)."""
    longest = max(len(s) for s in audio_spans)
    out = torch.full((len(audio_spans), longest, 2), -1, dtype=torch.long)
    for i, spans in enumerate(audio_spans):
        problem = check_spans(spans, ordered=False)
        if problem:
            raise ValueError(f"audio_spans[{i}]: {problem}.")
        for j, (start, end) in enumerate(spans):
            first = int(math.floor(start / seconds_per_frame))
            out[i, j, 0] = first
            out[i, j, 1] = max(first + 1, int(math.ceil(end / seconds_per_frame)))
    return out


__all__ = ["check_spans", "span_frames"]
