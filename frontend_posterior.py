"""``audio_frontend="posterior"``: a non-autoregressive posterior interface (after LegoSLM, 2025).

Each clip's encoder frames are pooled as ``pool`` pools them (``posterior_kernel`` frames every ``posterior_stride``);
a trainable head maps each position to scores over the LLM's vocabulary, and the LLM reads the probability-weighted
mixture of its own frozen input embeddings: ``softmax(head(frames) / T) @ E`` (top-k renormalised with
``posterior_top_k``). One pass: no argmax, no sampling, no feedback, nothing decoded; every embedding lies in the
convex hull of the LLM's token embeddings (the audio placeholder's own row gets no weight). The table is detached:
gradients reach the head (and the encoder), never the LLM.

The head (``posterior_head``) is a free vocabulary-sized layer (``"vocab"``) or, ``"tied"``, a projector into the
LLM's embedding space scored against the LLM's own input embeddings plus a per-token bias. With ``posterior_blank``
the head also scores CTC's blank (trained with CTC on transcripts, ``training/align_posterior.py``) and the LLM
reads the kept, merged positions only (the rules: ``frontend_posterior_config``); the other slots stay unfilled.
Stage 2 reads the LLM's table, which training from cached encoder states does not pass, so this front end is not
cacheable. Options: ``frontend_posterior_config.PosteriorConfig``.
"""

from __future__ import annotations

import torch
from torch import nn

from .frontend_base import AudioFrontEnd, AudioFrontEndOutput, AudioProjector, EncoderFramesFrontEnd, span_means
from .frontend_posterior_config import PosteriorConfig


class VocabHead(AudioProjector):
    """A free output row per token (and one for the blank): ``AudioProjector`` with the vocabulary as its output."""

    def __init__(self, config, in_dim: int, vocab: int, blank: bool):
        super().__init__(config, in_dim, out_dim=vocab + int(blank))
        self.vocab = vocab

    def score(self, states: torch.Tensor, token_table: torch.Tensor | None, columns: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(token scores (..., vocab), blank scores (...) or None), float32; ``columns``: only those tokens' scores."""
        scores = self(states).float()
        tokens = scores[..., : self.vocab] if columns is None else scores[..., columns]
        return tokens, (scores[..., self.vocab] if scores.shape[-1] > self.vocab else None)


class TiedHead(AudioProjector):
    """``AudioProjector`` into the LLM's embedding space; a token's score is the dot product with its (frozen, detached)
    input embedding plus a per-token bias; the blank's, a linear score of the same projection."""

    def __init__(self, config, in_dim: int, vocab: int, blank: bool):
        super().__init__(config, in_dim)
        self.vocab = vocab
        self.token_bias = nn.Parameter(torch.zeros(vocab))
        self.blank = nn.Linear(config.text_config.hidden_size, 1) if blank else None

    def init_weights(self, std: float) -> None:
        super().init_weights(std)
        nn.init.zeros_(self.token_bias)
        if self.blank is not None:
            nn.init.zeros_(self.blank.weight)
            nn.init.zeros_(self.blank.bias)

    def score(self, states: torch.Tensor, token_table: torch.Tensor | None, columns: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if token_table is None:
            raise ValueError("posterior_head='tied' scores tokens by the LLM's input embeddings: it needs token_table.")
        hidden = self(states).float()
        table, bias = token_table.detach()[: self.vocab], self.token_bias
        if columns is not None:  # only these tokens (training's sampled candidates): the cost follows their number
            table, bias = table[columns], bias[columns]
        scores = hidden @ table.float().T + bias.float()
        return scores, (None if self.blank is None else self.blank(hidden.to(self.blank.weight.dtype)).float().squeeze(-1))


POSTERIOR_HEADS = {"vocab": VocabHead, "tied": TiedHead}


class PosteriorFrontEnd(EncoderFramesFrontEnd):
    config_class = PosteriorConfig
    cacheable = False  # stage 2 mixes the LLM's embedding table, which the cached training path does not pass

    def __init__(self, config):
        AudioFrontEnd.__init__(self, config)
        # the head, in the projector's place: pooled encoder states -> scores over the LLM's vocabulary
        head = POSTERIOR_HEADS[self.options.posterior_head]
        self.projector = head(config, self.projector_input_size(config), config.text_config.vocab_size, self.options.posterior_blank)

    def downsample(self, frames, lengths, counts, spans):
        index = torch.arange(max(counts), device=frames.device).unsqueeze(0)
        starts = (index * self.options.posterior_stride).expand(frames.shape[0], -1)
        return span_means(frames, lengths, starts, starts + self.options.posterior_kernel)

    def scores(self, states: torch.Tensor, token_table: torch.Tensor | None = None, columns: torch.Tensor | None = None
               ) -> torch.Tensor:
        """(..., positions, dim) pooled encoder states -> (..., positions, vocab [+ 1]) float32 scores over the LLM's
        tokens, the blank's last where the head has one (CTC's input: ``log_softmax`` of these), the temperature
        applied and the audio placeholder's own row at -inf. ``columns``: the scores of those tokens only (in that
        order; the placeholder must not be among them), the blank still last."""
        tokens, blank = self.projector.score(states, token_table, columns)
        audio_token = self.config.audio_token_id
        if columns is None and audio_token is not None and 0 <= audio_token < tokens.shape[-1]:
            tokens = tokens.clone()
            tokens[..., audio_token] = float("-inf")
        scores = tokens if blank is None else torch.cat([tokens, blank.unsqueeze(-1)], dim=-1)
        return scores / self.options.posterior_temperature

    def probabilities(self, states: torch.Tensor, token_table: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(..., positions, dim) -> the posterior over the LLM's tokens (float32; rows sum to 1 without the blank, at
        most ``posterior_top_k`` nonzero per row when set, none on the audio placeholder) and each position's blank
        probability (None without a blank class)."""
        scores = self.scores(states, token_table)
        blank = None
        if self.options.posterior_blank:
            blank = torch.softmax(scores, dim=-1)[..., -1]
            scores = scores[..., :-1]
        k = self.options.posterior_top_k
        if 0 < k < scores.shape[-1]:
            keep = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, scores.topk(k, dim=-1).indices, True)
            scores = scores.masked_fill(~keep, float("-inf"))
        return torch.softmax(scores, dim=-1), blank

    def kept_positions(self, probs: torch.Tensor, blank: torch.Tensor, slots: int) -> torch.Tensor:
        """One clip's (positions, vocab) token posteriors and blank probabilities -> the (n <= slots, vocab) posteriors
        the LLM reads: blank positions dropped, overlapping neighbours merged, the least blank kept when over."""
        kept = torch.nonzero(blank < self.options.posterior_keep).squeeze(-1)
        if kept.numel() == 0:
            return probs[:0]
        groups, weights = [probs[kept[0]]], [1 - blank[kept[0]]]
        for prev, cur in zip(kept[:-1].tolist(), kept[1:].tolist()):
            overlap = float(torch.sqrt(probs[prev] * probs[cur]).sum())
            if cur == prev + 1 and overlap >= self.options.posterior_merge:
                groups[-1] = groups[-1] + probs[cur]
                weights[-1] = torch.minimum(weights[-1], 1 - blank[cur])
            else:
                groups.append(probs[cur])
                weights.append(1 - blank[cur])
        merged = torch.stack(groups)
        merged = merged / merged.sum(-1, keepdim=True)
        if merged.shape[0] > slots:  # the least blank `slots` positions, in time order
            order = torch.stack(weights).topk(slots).indices.sort().values
            merged = merged[order]
        return merged

    def embed_encoder_states(self, states, num_samples=None, token_table=None, frames=None):
        """The mixture of the LLM's input embeddings (``token_table``, detached) under each position's posterior. With
        a blank, each clip's slots follow its encoder frames (``frames``, else from ``num_samples``)."""
        if token_table is None:
            raise ValueError("audio_frontend='posterior' mixes the LLM's input embeddings: it needs token_table.")
        vocab = self.projector.vocab
        if token_table.shape[0] < vocab:
            raise ValueError(f"audio_frontend='posterior': the head scores {vocab} tokens but the LLM's "
                             f"embedding table has {token_table.shape[0]} rows.")
        table = token_table.detach()[:vocab]
        if self.projector.per_sequence:  # a head with temporal context reads each clip alone (no padding beside it)
            parts = [self.probabilities(s.unsqueeze(0), table) for s in states]
            probs = nn.utils.rnn.pad_sequence([p[0][0] for p in parts], batch_first=True)
            blank = None if parts[0][1] is None else nn.utils.rnn.pad_sequence([p[1][0] for p in parts], batch_first=True)
        else:
            probs, blank = self.probabilities(nn.utils.rnn.pad_sequence(list(states), batch_first=True), table)
        counts = [s.shape[0] for s in states]
        if blank is None:
            mixed = (probs @ table.float()).to(table.dtype)
            return AudioFrontEndOutput(embeddings=tuple(mixed[i, :n] for i, n in enumerate(counts)),
                                       fill_mask=tuple(torch.ones(n, dtype=torch.bool, device=mixed.device) for n in counts))
        if frames is None and num_samples is None:
            raise ValueError("audio_frontend='posterior' with posterior_blank needs each clip's sample count.")
        frames = frames if frames is not None else [self.layout.clip_frames(int(n)) for n in num_samples]
        embeddings, masks = [], []
        for i, n in enumerate(counts):
            slots = self.options.slots(self.layout, int(frames[i]))
            read = self.kept_positions(probs[i, :n], blank[i, :n], slots)
            out = torch.zeros(slots, table.shape[1], dtype=table.dtype, device=table.device)
            out[: read.shape[0]] = (read @ table.float()).to(table.dtype)
            mask = torch.zeros(slots, dtype=torch.bool, device=table.device)
            mask[: read.shape[0]] = True
            embeddings.append(out)
            masks.append(mask)
        return AudioFrontEndOutput(embeddings=tuple(embeddings), fill_mask=tuple(masks))

    def forward(self, audio_inputs, audio_inputs_mask, audio_window_clip, audio_spans=None, token_table=None):
        states = self.encoder_states(audio_inputs, audio_inputs_mask, audio_window_clip, audio_spans)
        frames = self.clip_frames(audio_inputs_mask, audio_window_clip) if self.options.posterior_blank else None
        return self.embed_encoder_states(states, token_table=token_table, frames=frames)

    def clip_frames(self, audio_inputs_mask: torch.Tensor, audio_window_clip: torch.Tensor) -> list[int]:
        """Each clip's encoder frames: its windows' counts (``window_frame_counts``, as ``encode_windows``) summed."""
        per_window = self.window_frame_counts(audio_inputs_mask)
        owners = audio_window_clip.tolist()
        return [sum(n for n, c in zip(per_window, owners) if c == k) for k in range(max(owners) + 1)]


__all__ = ["PosteriorFrontEnd", "VocabHead", "TiedHead", "POSTERIOR_HEADS"]
