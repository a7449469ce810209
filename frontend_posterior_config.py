"""``audio_frontend="posterior"``'s options: a non-autoregressive posterior over the LLM's vocabulary per pooled
encoder position, read by the LLM as the expected input embedding under it.

Each clip's encoder frames are averaged ``posterior_kernel`` at a time every ``posterior_stride`` frames (as ``pool``
does: 8 and 4); a trainable head scores the LLM's vocabulary at each position (``posterior_vocab: "llm"``, the only
vocabulary so far: no token map is needed), and the embedding is ``softmax(scores / posterior_temperature) @ E``
over the LLM's own input embeddings ``E``, keeping the ``posterior_top_k`` largest probabilities renormalised
(0: all of them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from .frontend_config import FramesConfig, positive_int

POSTERIOR_VOCABS = ("llm",)  # what the head's distribution is over: the LLM's own vocabulary


@dataclass(frozen=True)
class PosteriorConfig(FramesConfig):
    name: ClassVar[str] = "posterior"
    posterior_kernel: int = 8  # encoder frames averaged per position
    posterior_stride: int = 4  # encoder frames between the starts of two positions
    posterior_vocab: str = "llm"  # the vocabulary the head's distribution is over
    posterior_top_k: int = 0  # keep the k most probable tokens per position (renormalised); 0: all
    posterior_temperature: float = 1.0  # the softmax's temperature

    def __post_init__(self):
        owner, set_ = "audio_frontend='posterior'", object.__setattr__
        for option in ("posterior_kernel", "posterior_stride"):
            set_(self, option, positive_int(owner, option, getattr(self, option)))
        if self.posterior_vocab not in POSTERIOR_VOCABS:
            raise ValueError(f"{owner}: posterior_vocab must be one of {POSTERIOR_VOCABS}, got {self.posterior_vocab!r}.")
        top_k = self.posterior_top_k
        if isinstance(top_k, bool) or not isinstance(top_k, (int, float)) or int(top_k) != top_k or top_k < 0:
            raise ValueError(f"{owner}: posterior_top_k must be an integer >= 0 (0: all tokens), got {top_k!r}.")
        set_(self, "posterior_top_k", int(top_k))
        temperature = self.posterior_temperature
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0 or math.isinf(temperature):
            raise ValueError(f"{owner}: posterior_temperature must be a positive number, got {temperature!r}.")
        set_(self, "posterior_temperature", float(temperature))

    def downsampled_length(self, layout, frames: int, num_spans: int | None = None) -> int:
        return math.ceil(max(frames - self.posterior_kernel, 0) / self.posterior_stride) + 1
