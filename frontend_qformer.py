"""``audio_frontend="qformer"``: a querying transformer initialised from Whisper's decoder (after DiVA, Held et al. 2025).

Whisper's decoder has learned to read Whisper's encoder through cross-attention. Here a fixed set of learned query
vectors takes the place of its text tokens: in one non-autoregressive pass (all queries at once, the decoder's
own causal self-attention kept), each query attends to the encoder frames of its window, and the decoder's output
at every query is projected into the LLM. Nothing is decoded from the audio: the LLM reads continuous embeddings.

A window gets ``max(1, ceil(qformer_queries * f / F))`` queries, ``f`` its feature frames and ``F`` a full window's
(``qformer_queries`` per full 30 s window: the count follows the audio's length, as the pooled routes' does); a
clip's embeddings are its windows' in order. Options: ``frontend_qformer_config.QFormerConfig``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .frontend_base import ASR_DECODER_CLASSES, AudioFrontEnd, AudioFrontEndOutput, AudioProjector, group_by_clip
from .frontend_qformer_config import QFormerConfig

# Seed of the queries' initialisation when the decoder is adopted from a pretrained ASR model (same build, same model).
QUERY_INIT_SEED = 0


class QFormerFrontEnd(AudioFrontEnd):
    config_class = QFormerConfig
    cacheable = True

    def __init__(self, config):
        super().__init__(config)
        d = config.audio_config.d_model
        self.qformer = self._strip(ASR_DECODER_CLASSES[config.audio_config.model_type](config.audio_config))
        self.queries = nn.Parameter(torch.randn(self.options.qformer_queries, d) * 0.02)
        self.projector = AudioProjector(config, d)

    @staticmethod
    def _strip(decoder: nn.Module) -> nn.Module:
        decoder.embed_tokens = None  # queries take the place of tokens: the vocabulary is not needed
        return decoder

    def adopt(self, asr_model) -> None:
        """The encoder (as every front end) and a trainable copy of the ASR model's decoder; queries start at the
        decoder's mean token embedding plus noise at the embeddings' own spread (seeded)."""
        super().adopt(asr_model)
        if not hasattr(asr_model, "get_decoder"):
            raise ValueError("audio_frontend='qformer' needs an encoder-decoder ASR model (e.g. WhisperForConditionalGeneration).")
        decoder = asr_model.get_decoder()
        tokens = decoder.embed_tokens.weight.detach()
        self.qformer = self._strip(copy.deepcopy(decoder))
        generator = torch.Generator().manual_seed(QUERY_INIT_SEED)
        noise = torch.randn(self.options.qformer_queries, tokens.shape[1], generator=generator)
        init = tokens.float().mean(0) + noise * tokens.float().std(0)
        self.queries = nn.Parameter(init.to(device=tokens.device, dtype=tokens.dtype))

    adapter_lora_scope = "qformer"

    def adapter_parameters(self, full: bool = True):
        """The queries, the querying transformer (unless LoRA adapts it: ``full=False``) and the projector."""
        return [self.queries, *(self.qformer.parameters() if full else ()), *self.projector.parameters()]

    def init_weights(self, std: float) -> None:
        self.projector.init_weights(std)

    def read_window(self, frames: torch.Tensor, n_queries: int) -> torch.Tensor:
        """One window's encoder frames (frames, d) -> the decoder's states at ``n_queries`` queries (n, d)."""
        dec = self.qformer
        dtype = dec.layer_norm.weight.dtype
        hidden = (self.queries[:n_queries] + dec.embed_positions.weight[:n_queries]).to(dtype).unsqueeze(0)
        hidden = nn.functional.dropout(hidden, p=dec.config.dropout, training=self.training)
        causal = torch.full((n_queries, n_queries), torch.finfo(dtype).min, dtype=dtype, device=hidden.device).triu(1)
        causal = causal[None, None]
        memory = frames.to(dtype).unsqueeze(0)
        for layer in dec.layers:
            out = layer(hidden, causal, encoder_hidden_states=memory, cache=None, use_cache=False)
            hidden = out[0] if isinstance(out, tuple) else out
        return dec.layer_norm(hidden)[0]

    def _project(self, per_clip: list[torch.Tensor]) -> AudioFrontEndOutput:
        projected = [self.projector(states) for states in per_clip]
        return AudioFrontEndOutput(embeddings=tuple(projected),
                                   fill_mask=tuple(torch.ones(p.shape[0], dtype=torch.bool, device=p.device) for p in projected))

    # ---- stages ---------------------------------------------------------------------------------------
    def encoder_states(self, audio_inputs, audio_inputs_mask, audio_window_clip, audio_spans=None):
        """Stage 1: each clip's encoder frames, its windows concatenated in order."""
        return group_by_clip(self.encoder_frames(audio_inputs, audio_inputs_mask, audio_window_clip), audio_window_clip)

    def embed_encoder_states(self, states, num_samples):
        """Stage 2: the queries read each window of each clip (window bounds from the clip's sample count)."""
        layout, per_clip = self.layout, []
        for frames, n in zip(states, num_samples):
            parts, at = [], 0
            for start, end in layout.split_windows(int(n)):
                count = layout.encoder_frames(end - start)
                parts.append(self.read_window(frames[at : at + count], self.options.queries_for(layout, layout.audio_frames(end - start))))
                at += count
            if at != frames.shape[0]:
                raise ValueError(f"A clip of {int(n)} samples has {frames.shape[0]} encoder frames; its windows hold {at}.")
            per_clip.append(torch.cat(parts))
        return self._project(per_clip)

    def forward(self, audio_inputs, audio_inputs_mask, audio_window_clip, audio_spans=None, token_table=None):
        windows = self.encoder_frames(audio_inputs, audio_inputs_mask, audio_window_clip)
        read = [self.read_window(frames, self.options.queries_for(self.layout, int(n)))
                for frames, n in zip(windows, audio_inputs_mask.sum(-1).tolist())]
        return self._project(group_by_clip(read, audio_window_clip))


__all__ = ["QFormerFrontEnd"]
