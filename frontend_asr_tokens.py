"""``audio_frontend="asr_tokens"``: Whisper's greedy decoding inside the model, one embedding per token it writes.

Each window (padded to the full 30 s, as Whisper was trained) is decoded greedily, batched over windows with a
KV cache. The embedding at a token is the projector's map of the decoder's hidden state, plus (with
``asr_token_mixture: k``) the LLM's own input embeddings of what the token says: ``asr_token_map`` holds, for
every ASR token, the LLM pieces of its text (up to ``asr_token_pieces``). A token that is one LLM piece fills one
slot with the expected LLM embedding under the decoder's top-k tokens at that step (at a trained temperature; the
alternatives count by their first piece); a token of several pieces (SmolLM2 splits digits: " 2024" is " ", "2",
"0", "2", "4") fills one slot per piece with that piece's embedding, so it reaches the LLM whole. A window of ``s``
seconds has ``ceil(s * audio_tokens_per_second) + 1`` slots; its decoding stops when the next token's pieces would
not fit, and the slots it leaves empty are unfilled. Options: ``frontend_asr_tokens_config.AsrTokensConfig``.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from .frontend_asr_tokens_config import AsrTokensConfig
from .frontend_base import AudioFrontEnd, AudioFrontEndOutput, AudioProjector, group_by_clip, whisper_window_states


logger = logging.getLogger(__name__)


class TokenMixtureProjector(AudioProjector):
    """The decoder-state projection plus the expected LLM embedding of the ASR decoder's top-k tokens."""

    def __init__(self, config, in_dim: int):
        super().__init__(config, in_dim)
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def init_weights(self, std: float) -> None:
        super().init_weights(std)
        nn.init.zeros_(self.net[-1].weight)  # the state projection is a correction to the mixture: it starts at none
        with torch.no_grad():
            self.log_temperature.zero_()

    def mix_tokens(self, logits: torch.Tensor, ids: torch.Tensor, token_map: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """``logits``/``ids``: (n, k) top-k scores and ASR token ids; ``token_map`` maps them to LLM ids (-1 for
        control tokens, which get no weight); ``table`` is the LLM's input embedding table. -> (n, hidden)."""
        mapped = token_map[ids]
        scores = (logits.float() / self.log_temperature.exp()).masked_fill(mapped < 0, float("-inf"))
        weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # a row of control tokens only: no mixture
        return torch.einsum("nk,nkd->nd", weights, table[mapped.clamp(min=0)].float())


class AsrTokensFrontEnd(AudioFrontEnd):
    config_class = AsrTokensConfig
    encoder_trainable = False  # greedy decoding passes no gradient to the encoder

    def __init__(self, config):
        super().__init__(config)
        # ASR token id -> the LLM token ids of its text's pieces, -1 padded (all -1: control token); attach_tokenizers
        self.register_buffer("asr_token_map", self.unmapped())
        in_dim = config.audio_config.d_model
        self.projector = TokenMixtureProjector(config, in_dim) if self.options.asr_token_mixture > 0 else AudioProjector(config, in_dim)

    def unmapped(self) -> torch.Tensor:
        return torch.full((self.config.audio_config.vocab_size, self.options.asr_token_pieces), -1, dtype=torch.long)

    def adopt(self, asr_model) -> None:
        super().adopt(asr_model)
        self.register_buffer("asr_token_map", self.unmapped())

    def attach_tokenizers(self, asr_tokenizer, llm_tokenizer) -> int:
        """Map each ASR text token to the LLM pieces of its text (control tokens: none). Returns how many tokens have
        more pieces than ``asr_token_pieces`` (kept truncated, with a warning)."""
        table = self.unmapped()
        width = table.shape[1]
        # control tokens (Whisper: specials, language and task tags, timestamps) are the tokenizer's added tokens
        special = set(asr_tokenizer.all_special_ids) | set(asr_tokenizer.added_tokens_decoder) | set(self.options.asr_prompt_ids or [])
        truncated = []
        for token_id in range(min(table.shape[0], len(asr_tokenizer))):
            if token_id in special:
                continue
            text = asr_tokenizer.decode([token_id])
            pieces = llm_tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
            if len(pieces) > width:
                truncated.append(text)
            if pieces:
                table[token_id, : min(len(pieces), width)] = torch.tensor(pieces[:width])
        if truncated:
            logger.warning("%d ASR tokens have more than %d LLM pieces and are cut to %d (e.g. %r)", len(truncated), width,
                           width, truncated[:3])
        self.asr_token_map.copy_(table)
        return len(truncated)

    def slot_cost(self, tokens: torch.Tensor) -> torch.Tensor:
        """Slots each ASR token fills: its LLM pieces with the token mixture (at least one), one without."""
        if not isinstance(self.projector, TokenMixtureProjector):
            return torch.ones_like(tokens)
        return (self.asr_token_map[tokens] >= 0).sum(-1).clamp(min=1)

    def window_slots(self, input_features_mask: torch.Tensor) -> list[int]:
        """Each window's token slots, from its audio frames (the processor's mask)."""
        return [self.options.window_token_slots(self.layout, int(n)) for n in input_features_mask.sum(-1).tolist()]

    @torch.no_grad()
    def decode(self, features: torch.Tensor, mask: torch.Tensor) -> tuple[list, list, list]:
        """Greedy ASR decoding of a batch of full-length windows.

        Returns, per window, the decoder's final hidden state at each token it writes (the state whose output
        head chose that token), those token ids, and the top-``asr_token_mixture`` (scores, ids) of each step
        (``None`` without the mixture). A window decodes at most ``window_slots`` tokens.
        """
        config, decoder = self.options, self.asr_decoder
        if not config.asr_prompt_ids or config.asr_eos_token_id is None:
            raise ValueError("audio_frontend='asr_tokens' needs frontend_config's asr_prompt_ids and asr_eos_token_id (see from_components).")
        dtype = next(self.encoder.parameters()).dtype
        windows = features.shape[0]
        slots = torch.tensor(self.window_slots(mask), device=features.device)
        full = torch.full((windows,), self.layout.encoder_frames(self.layout.window_samples), device=features.device)
        encoded = whisper_window_states(self.encoder, features.to(dtype), torch.ones_like(mask, dtype=dtype), full)
        head = decoder.embed_tokens.weight  # Whisper ties its output head to the token embeddings
        blocked = torch.zeros(head.shape[0], dtype=torch.bool, device=head.device)
        blocked[[t for t in config.asr_suppress_tokens if t < head.shape[0]]] = True
        first_blocked = blocked.clone()
        first_blocked[[t for t in config.asr_begin_suppress_tokens if t < head.shape[0]]] = True
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        step_input = torch.tensor(config.asr_prompt_ids, device=features.device).expand(windows, -1)
        finished = torch.zeros(windows, dtype=torch.bool, device=features.device)
        used = torch.zeros(windows, dtype=torch.long, device=features.device)
        states, tokens, alive, top = [], [], [], []
        k = config.asr_token_mixture
        for step in range(int(slots.max())):
            hidden = decoder(input_ids=step_input, encoder_hidden_states=encoded, cache=cache, use_cache=True).last_hidden_state[:, -1]
            logits = (hidden @ head.T).float().masked_fill(first_blocked if step == 0 else blocked, float("-inf"))
            chosen = logits.argmax(-1)
            cost = self.slot_cost(chosen)
            finished |= (chosen == config.asr_eos_token_id) | (used + cost > slots)
            if bool(finished.all()):
                break
            used += cost * ~finished
            states.append(hidden)
            tokens.append(chosen)
            alive.append(~finished)
            if k:
                top.append(logits.topk(k, dim=-1))
            step_input = chosen.unsqueeze(1)
        if not states:
            empty = encoded.new_zeros(0, encoded.shape[-1])
            no_top = [(empty.new_zeros(0, k), chosen.new_zeros(0, k))] * windows if k else [None] * windows
            return [empty] * windows, [chosen.new_zeros(0)] * windows, no_top
        states, tokens, alive = torch.stack(states, 1), torch.stack(tokens, 1), torch.stack(alive, 1)
        counts = alive.sum(1).tolist()  # a window stops for good at its first end token
        if k:
            scores, ids = torch.stack([t.values for t in top], 1), torch.stack([t.indices for t in top], 1)
            top = [(scores[w, : counts[w]], ids[w, : counts[w]]) for w in range(windows)]
        else:
            top = [None] * windows
        return [states[w, : counts[w]] for w in range(windows)], [tokens[w, : counts[w]] for w in range(windows)], top

    def embed_tokens(self, states: torch.Tensor, tokens: torch.Tensor, top, token_table: torch.Tensor | None) -> torch.Tensor:
        """One clip's decoded tokens -> its audio embeddings, ``slot_cost(tokens)`` of them per token."""
        cost = self.slot_cost(tokens)
        slot_of = torch.repeat_interleave(torch.arange(tokens.shape[0], device=tokens.device), cost)
        embeddings = self.projector(states)[slot_of]
        if not isinstance(self.projector, TokenMixtureProjector):
            return embeddings
        if token_table is None:
            raise ValueError("The token mixture needs the LLM's input embedding table (token_table).")
        offset = torch.arange(slot_of.shape[0], device=tokens.device) - (cost.cumsum(0) - cost)[slot_of]
        pieces = self.asr_token_map[tokens[slot_of], offset]
        scores, ids = top
        soft = self.projector.mix_tokens(scores[slot_of], ids[slot_of], self.asr_token_map[:, 0], token_table)
        hard = token_table[pieces.clamp(min=0)].float() * (pieces >= 0).unsqueeze(-1)
        multi = (cost[slot_of] > 1).unsqueeze(-1)
        return embeddings + torch.where(multi, hard, soft).to(embeddings.dtype)

    def forward(self, audio_inputs, audio_inputs_mask, audio_window_clip, audio_spans=None, token_table=None):
        input_features, input_features_mask = audio_inputs, audio_inputs_mask
        step = max(1, self.config.encoder_forward_batch)
        states, tokens, tops = [], [], []
        for i in range(0, input_features.shape[0], step):
            h, t, top = self.decode(input_features[i : i + step], input_features_mask[i : i + step])
            states.extend(h)
            tokens.extend(t)
            tops.extend(top)
        per_clip_states = group_by_clip(states, audio_window_clip)
        per_clip_tokens = group_by_clip(tokens, audio_window_clip)
        if tops[0] is None:
            per_clip_tops = [None] * len(per_clip_tokens)
        else:
            per_clip_tops = list(zip(group_by_clip([t[0] for t in tops], audio_window_clip), group_by_clip([t[1] for t in tops], audio_window_clip)))
        embeddings = [self.embed_tokens(h, t, top, token_table) for h, t, top in zip(per_clip_states, per_clip_tokens, per_clip_tops)]
        slots = [0] * len(embeddings)
        for window_slots, clip in zip(self.window_slots(input_features_mask), audio_window_clip.tolist()):
            slots[clip] += window_slots
        fill = tuple(torch.arange(n, device=input_features.device) < e.shape[0] for e, n in zip(embeddings, slots))
        padded = tuple(nn.functional.pad(e, (0, 0, 0, n - e.shape[0])) for e, n in zip(embeddings, slots))
        return AudioFrontEndOutput(embeddings=padded, fill_mask=fill, token_ids=tuple(per_clip_tokens))


__all__ = ["AsrTokensFrontEnd", "TokenMixtureProjector"]
