"""``audio_frontend="posterior"``: a non-autoregressive posterior interface (after LegoSLM, 2025).

Each clip's encoder frames are pooled as ``pool`` pools them (``posterior_kernel`` frames every ``posterior_stride``);
a trainable head maps each position to scores over the LLM's vocabulary, and the LLM reads the probability-weighted
mixture of its own frozen input embeddings: ``softmax(head(frames) / T) @ E`` (top-k renormalised with
``posterior_top_k``). One pass: no argmax, no sampling, no feedback, nothing decoded; every embedding lies in the
convex hull of the LLM's token embeddings (the audio placeholder's own row gets no weight). The table is detached:
gradients reach the head (and the encoder), never the LLM. Stage 2 reads the LLM's table, which training from cached
encoder states does not pass, so this front end is not cacheable. Options:
``frontend_posterior_config.PosteriorConfig``.
"""

from __future__ import annotations

import torch
from torch import nn

from .frontend_base import AudioFrontEnd, AudioFrontEndOutput, AudioProjector, EncoderFramesFrontEnd, span_means
from .frontend_posterior_config import PosteriorConfig


class PosteriorFrontEnd(EncoderFramesFrontEnd):
    config_class = PosteriorConfig
    cacheable = False  # stage 2 mixes the LLM's embedding table, which the cached training path does not pass

    def __init__(self, config):
        AudioFrontEnd.__init__(self, config)
        # the head, in the projector's place: encoder states -> scores over the LLM's vocabulary
        self.projector = AudioProjector(config, self.projector_input_size(config), out_dim=config.text_config.vocab_size)

    def downsample(self, frames, lengths, counts, spans):
        index = torch.arange(max(counts), device=frames.device).unsqueeze(0)
        starts = (index * self.options.posterior_stride).expand(frames.shape[0], -1)
        return span_means(frames, lengths, starts, starts + self.options.posterior_kernel)

    def probabilities(self, states: torch.Tensor) -> torch.Tensor:
        """(..., positions, dim) pooled encoder states -> (..., positions, vocab) the posterior (float32): rows sum
        to 1, at most ``posterior_top_k`` nonzero per row (when set), none on the audio placeholder token."""
        scores = self.projector(states).float() / self.options.posterior_temperature
        vocab = scores.shape[-1]
        audio_token = self.config.audio_token_id
        if audio_token is not None and 0 <= audio_token < vocab:
            scores[..., audio_token] = float("-inf")
        k = self.options.posterior_top_k
        if 0 < k < vocab:
            keep = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, scores.topk(k, dim=-1).indices, True)
            scores = scores.masked_fill(~keep, float("-inf"))
        return torch.softmax(scores, dim=-1)

    def embed_encoder_states(self, states, num_samples=None, token_table=None):
        """The mixture of the LLM's input embeddings (``token_table``, detached) under each position's posterior."""
        if token_table is None:
            raise ValueError("audio_frontend='posterior' mixes the LLM's input embeddings: it needs token_table.")
        probs = self.probabilities(nn.utils.rnn.pad_sequence(list(states), batch_first=True))
        if token_table.shape[0] < probs.shape[-1]:
            raise ValueError(f"audio_frontend='posterior': the head scores {probs.shape[-1]} tokens but the LLM's "
                             f"embedding table has {token_table.shape[0]} rows.")
        table = token_table.detach()[: probs.shape[-1]]
        mixed = (probs @ table.float()).to(table.dtype)
        counts = [s.shape[0] for s in states]
        return AudioFrontEndOutput(embeddings=tuple(mixed[i, :n] for i, n in enumerate(counts)),
                                   fill_mask=tuple(torch.ones(n, dtype=torch.bool, device=mixed.device) for n in counts))

    def forward(self, audio_inputs, audio_inputs_mask, audio_window_clip, audio_spans=None, token_table=None):
        states = self.encoder_states(audio_inputs, audio_inputs_mask, audio_window_clip, audio_spans)
        return self.embed_encoder_states(states, token_table=token_table)


__all__ = ["PosteriorFrontEnd"]
