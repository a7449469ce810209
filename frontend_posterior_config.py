"""``audio_frontend="posterior"``'s options: a non-autoregressive posterior over the LLM's vocabulary per pooled
encoder position, read by the LLM as the expected input embedding under it.

Each clip's encoder frames are averaged ``posterior_kernel`` at a time every ``posterior_stride`` frames (as ``pool``
does: 8 and 4); a trainable head scores the LLM's vocabulary at each position (``posterior_vocab: "llm"``, the only
vocabulary so far: no token map is needed), and the embedding is ``softmax(scores / posterior_temperature) @ E``
over the LLM's own input embeddings ``E``, keeping the ``posterior_top_k`` largest probabilities renormalised
(0: all of them).

The head (``posterior_head``): ``"vocab"`` scores every token with its own output row (a vocabulary-sized layer);
``"tied"`` maps each position into the LLM's embedding space and scores a token by the dot product with its frozen
input embedding plus a per-token bias (the LLM's table is the output layer: a small head that starts from the
LLM's own geometry).

``posterior_blank`` adds CTC's blank class (the head is then trained with CTC on transcripts:
``training/align_posterior.py``). The LLM reads only the positions whose blank probability is under
``posterior_keep``; two adjacent kept positions whose token distributions overlap by ``posterior_merge`` or more
(Bhattacharyya coefficient, sum of sqrt(p q)) are one position (their mean): CTC writes a token over consecutive
positions. Each mixture is over the tokens alone (renormalised without the blank). These are length rules on the
posteriors, computed in one pass: nothing is decoded, no argmax, no sampling. A clip then gets
``ceil(seconds * posterior_slots_per_second) + 1`` slots (at most one per position; the seconds its encoder frames
span); when more positions are kept, those with the lowest blank probability are read, in time order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from .frontend_config import FramesConfig, positive_int

POSTERIOR_VOCABS = ("llm",)  # what the head's distribution is over: the LLM's own vocabulary
POSTERIOR_HEADS = ("vocab", "tied")  # a free output row per token, or the LLM's input embeddings as output rows


@dataclass(frozen=True)
class PosteriorConfig(FramesConfig):
    name: ClassVar[str] = "posterior"
    posterior_kernel: int = 8  # encoder frames averaged per position
    posterior_stride: int = 4  # encoder frames between the starts of two positions
    posterior_vocab: str = "llm"  # the vocabulary the head's distribution is over
    posterior_top_k: int = 0  # keep the k most probable tokens per position (renormalised); 0: all
    posterior_temperature: float = 1.0  # the softmax's temperature
    posterior_head: str = "vocab"  # POSTERIOR_HEADS
    posterior_blank: bool = False  # a CTC blank class and the keep / merge rules
    posterior_keep: float = 0.5  # read positions whose blank probability is below this
    posterior_merge: float = 0.5  # adjacent kept positions overlapping this much are one (1.0: never merge)
    posterior_slots_per_second: float = 8.0  # slots per second of audio when posterior_blank

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
        if self.posterior_head not in POSTERIOR_HEADS:
            raise ValueError(f"{owner}: posterior_head must be one of {POSTERIOR_HEADS}, got {self.posterior_head!r}.")
        if not isinstance(self.posterior_blank, bool):
            raise ValueError(f"{owner}: posterior_blank must be true or false, got {self.posterior_blank!r}.")
        for option in ("posterior_keep", "posterior_merge"):
            value = getattr(self, option)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
                raise ValueError(f"{owner}: {option} must be a number in (0, 1], got {value!r}.")
            set_(self, option, float(value))
        rate = self.posterior_slots_per_second
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0 or math.isinf(rate):
            raise ValueError(f"{owner}: posterior_slots_per_second must be a positive number, got {rate!r}.")
        set_(self, "posterior_slots_per_second", float(rate))

    def num_embeddings(self, layout, num_samples: int, num_spans: int | None = None) -> int:
        return self.slots(layout, layout.clip_frames(num_samples))

    def slots(self, layout, frames: int) -> int:
        """The slots of a clip of ``frames`` encoder frames (what both the processor and the front end know exactly):
        one per position, or with ``posterior_blank`` ``ceil(seconds * posterior_slots_per_second) + 1`` (at most one
        per position), the seconds being the frames' span."""
        positions = self.downsampled_length(layout, frames)
        if not self.posterior_blank:
            return positions
        seconds = frames * layout.samples_per_frame / layout.sampling_rate
        return min(positions, math.ceil(seconds * self.posterior_slots_per_second) + 1)

    def downsampled_length(self, layout, frames: int, num_spans: int | None = None) -> int:
        return math.ceil(max(frames - self.posterior_kernel, 0) / self.posterior_stride) + 1
