"""AudioMiniChat: speech encoder -> downsampler -> projector -> embeddings in a frozen causal LLM's prompt.

The model follows Kang & Roy (Interspeech 2024): audio frames from a speech encoder (Whisper, HuBERT,
wav2vec2) are downsampled (average pool, stacking or pooling over given spans), projected to the LLM's
embedding size and written into the positions of the ``<|audio|>`` placeholder tokens of a chat prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.whisper.modeling_whisper import WhisperDecoder, WhisperEncoder

from .configuration_audio_minichat import AudioMiniChatConfig
from .pipeline_audio_minichat import PIPELINE_TASK, AudioMiniChatPipeline, register_pipeline

AUDIO_INPUT_NAMES = ("input_features", "input_features_mask", "audio_window_clip", "audio_spans")

# Encoder module per frontend kind ("mel" encoders are built as their bare encoder stack).
MEL_ENCODER_CLASSES = {"whisper": WhisperEncoder}
# The ASR decoder of an encoder-decoder model, for downsample="asr_tokens".
ASR_DECODER_CLASSES = {"whisper": WhisperDecoder}


def span_means(frames: torch.Tensor, lengths: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    """Mean of ``frames[c, starts[c, j]:ends[c, j]]`` for every clip ``c`` and span ``j``.

    ``frames`` is (clips, frames, dim) with valid frames first; spans are clipped to each clip's
    ``lengths`` and never empty. Uses prefix sums, so it is exact for any padding.
    """
    clips, _, dim = frames.shape
    zero = frames.new_zeros(clips, 1, dim)
    prefix = torch.cat([zero, frames.float().cumsum(dim=1)], dim=1)  # (C, F+1, D)
    limit = lengths.view(-1, 1)
    starts = torch.minimum(starts.clamp(min=0), limit - 1)
    ends = torch.minimum(torch.maximum(ends, starts + 1), limit)
    gather = lambda idx: prefix.gather(1, idx.unsqueeze(-1).expand(-1, -1, dim))  # noqa: E731
    sums = gather(ends) - gather(starts)
    return (sums / (ends - starts).unsqueeze(-1).to(sums.dtype)).to(frames.dtype)


@dataclass
class AudioMiniChatOutput(CausalLMOutputWithPast):
    """The LLM's output plus, when asked (``output_audio_embeddings=True``), each clip's audio embeddings."""

    audio_embeddings: tuple[torch.Tensor, ...] | None = None
    # downsample="asr_tokens": per clip, the ASR token behind each audio embedding
    audio_token_ids: tuple[torch.Tensor, ...] | None = None


class AudioProjector(nn.Module):
    """Downsample encoder frames (pool / stack / ctc_pool) and project them to the LLM embedding size."""

    def __init__(self, config: AudioMiniChatConfig):
        super().__init__()
        self.layout = config.audio_layout()
        in_dim = config.projector_input_size()
        out_dim = config.text_config.hidden_size
        if config.projector_type == "linear":
            self.net = nn.Sequential(nn.Linear(in_dim, out_dim))
        else:
            hidden = config.projector_hidden_size or out_dim
            self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
        self.token_mixture = config.downsample == "asr_tokens" and config.asr_token_mixture > 0
        if self.token_mixture:
            # temperature of the ASR token posterior the mixture reads (see mix_tokens)
            self.log_temperature = nn.Parameter(torch.zeros(()))

    def mix_tokens(self, logits: torch.Tensor, ids: torch.Tensor, token_map: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """Expected LLM input embedding under the ASR decoder's top-k posterior at each token.

        ``logits``/``ids``: (n, k) top-k scores and ASR token ids; ``token_map`` maps them to LLM ids (-1 for
        control tokens, which get no weight); ``table`` is the LLM's input embedding table. (n, hidden).
        """
        mapped = token_map[ids]
        scores = (logits.float() / self.log_temperature.exp()).masked_fill(mapped < 0, float("-inf"))
        weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # a row of control tokens only: no mixture
        return torch.einsum("nk,nkd->nd", weights, table[mapped.clamp(min=0)].float())

    def downsample(self, frames: torch.Tensor, lengths: torch.Tensor, spans: torch.Tensor | None) -> tuple:
        """(clips, frames, dim) + valid lengths -> (clips, n, dim') and the valid count per clip."""
        layout = self.layout
        if layout.downsample == "asr_tokens":  # one embedding per decoded token: nothing to pool
            return frames, [int(n) for n in lengths.tolist()]
        counts = [layout.downsampled_length(int(n), None if spans is None else int((spans[i, :, 0] >= 0).sum()))
                  for i, n in enumerate(lengths.tolist())]
        most = max(counts)
        index = torch.arange(most, device=frames.device).unsqueeze(0)
        if layout.downsample == "stack":
            k = layout.stack_factor
            padded = nn.functional.pad(frames, (0, 0, 0, most * k - frames.shape[1])) if most * k > frames.shape[1] else frames[:, : most * k]
            return padded.reshape(frames.shape[0], most, k * frames.shape[2]), counts
        if layout.downsample == "pool":
            starts = (index * layout.pool_stride).expand(frames.shape[0], -1)
            ends = starts + layout.pool_kernel
        else:  # ctc_pool
            starts, ends = spans[:, :most, 0], spans[:, :most, 1]
        return span_means(frames, lengths, starts, ends), counts

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor, spans: torch.Tensor | None = None) -> list[torch.Tensor]:
        pooled, counts = self.downsample(frames, lengths, spans)
        projected = self.net(pooled.to(self.net[0].weight.dtype))
        return [projected[i, :n] for i, n in enumerate(counts)]


class AudioMiniChatPreTrainedModel(PreTrainedModel):
    config_class = AudioMiniChatConfig
    base_model_prefix = ""
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _no_split_modules = ["LlamaDecoderLayer", "WhisperEncoderLayer", "HubertEncoderLayer", "Wav2Vec2EncoderLayer"]

    def _init_weights(self, module):
        if isinstance(module, nn.Linear) and isinstance(getattr(self, "projector", None), AudioProjector) and any(
            module is m for m in self.projector.modules()
        ):
            std = getattr(self.config.text_config, "initializer_range", 0.02)
            if self.projector.token_mixture and module is self.projector.net[-1]:
                std = 0.0  # the projector adds a correction to the token mixture: it starts at none
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


class AudioMiniChatForConditionalGeneration(AudioMiniChatPreTrainedModel, GenerationMixin):
    """Speech encoder + projector + causal LLM. ``forward`` returns the LLM's output (plus ``loss`` from ``labels``)."""

    _audio_input_names = AUDIO_INPUT_NAMES

    def __init__(self, config: AudioMiniChatConfig):
        super().__init__(config)
        audio_config = config.audio_config
        if config.encoder_frontend == "mel":
            self.audio_encoder = MEL_ENCODER_CLASSES[audio_config.model_type](audio_config)
        else:
            self.audio_encoder = AutoModel.from_config(audio_config)
        if config.downsample == "asr_tokens":
            self.asr_decoder = ASR_DECODER_CLASSES[audio_config.model_type](audio_config)
            # ASR token id -> the LLM token id of the same text's first piece (-1: special); set by set_asr_token_map
            self.register_buffer("asr_token_map", _unset_asr_token_map(config))
        self.projector = AudioProjector(config)
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        self.post_init()

    # ---- embeddings access (for generate / resizing / peft) ----------------------------------------
    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value):
        self.language_model.set_output_embeddings(value)

    # ---- audio ------------------------------------------------------------------------------------
    def _encode_windows(self, features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder frames for a batch of padded windows: (windows, frames, dim) and valid frame counts."""
        layout = self.projector.layout
        sample_lengths = mask.sum(-1)
        frame_lengths = torch.tensor(
            [layout.encoder_frames(int(n) * (layout.mel_hop_length if layout.frontend == "mel" else 1))
             for n in sample_lengths.tolist()],
            device=features.device,
        )
        dtype = next(self.audio_encoder.parameters()).dtype
        if self.config.encoder_frontend == "mel":
            return self._encode_mel(features.to(dtype), mask.to(dtype), frame_lengths), frame_lengths
        norm = getattr(self.config.audio_config, "feat_extract_norm", "layer")
        if norm == "group":
            # Group norm spans time: padding would change the result, so such encoders see each window alone.
            outs = [
                self.audio_encoder(features[i : i + 1, : int(n)].to(dtype)).last_hidden_state[0]
                for i, n in enumerate(sample_lengths.tolist())
            ]
            longest = max(o.shape[0] for o in outs)
            hidden = torch.stack([nn.functional.pad(o, (0, 0, 0, longest - o.shape[0])) for o in outs])
        else:
            hidden = self.audio_encoder(features.to(dtype), attention_mask=mask.long()).last_hidden_state
        return hidden, frame_lengths

    def _encode_mel(self, features: torch.Tensor, mask: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
        """Whisper-style encoder on windows of any length up to its positional table (no 30 s padding)."""
        enc = self.audio_encoder
        hidden = nn.functional.gelu(enc.conv1(features)) * mask.unsqueeze(1)  # zero past each window's end
        hidden = nn.functional.gelu(enc.conv2(hidden)).permute(0, 2, 1)
        frames = hidden.shape[1]
        if frames > enc.embed_positions.weight.shape[0]:
            raise ValueError(f"An encoder window has {frames} frames; this encoder accepts at most {enc.embed_positions.weight.shape[0]}.")
        hidden = hidden + enc.embed_positions.weight[:frames].to(hidden.dtype)
        hidden = nn.functional.dropout(hidden, p=enc.config.dropout, training=self.training)
        valid = torch.arange(frames, device=hidden.device).unsqueeze(0) < frame_lengths.unsqueeze(1)
        attn = torch.zeros(valid.shape, dtype=hidden.dtype, device=hidden.device)
        attn = attn.masked_fill(~valid, torch.finfo(hidden.dtype).min)[:, None, None, :].expand(-1, 1, frames, -1)
        for layer in enc.layers:
            out = layer(hidden, attn)
            hidden = out[0] if isinstance(out, tuple) else out
        return enc.layer_norm(hidden)

    @torch.no_grad()
    def _asr_token_states(self, features: torch.Tensor, mask: torch.Tensor) -> tuple[list, list, list]:
        """downsample="asr_tokens": greedy ASR decoding of a batch of full-length windows.

        Returns, per window, the decoder's final hidden state at each token it writes (the state whose
        output head chose that token), those token ids, and the top-``asr_token_mixture`` (scores, ids) of
        each step (``None`` without the mixture). A window decodes at most ``layout.window_token_slots``
        tokens (its audio frames are counted from ``mask``).
        """
        config, layout, decoder = self.config, self.projector.layout, self.asr_decoder
        if not config.asr_prompt_ids or config.asr_eos_token_id is None:
            raise ValueError("downsample='asr_tokens' needs config.asr_prompt_ids and asr_eos_token_id (see from_components).")
        dtype = next(self.audio_encoder.parameters()).dtype
        windows = features.shape[0]
        slots = torch.tensor(self._window_slots(mask), device=features.device)
        full = torch.full((windows,), layout.encoder_frames(layout.window_samples), device=features.device)
        encoded = self._encode_mel(features.to(dtype), torch.ones_like(mask, dtype=dtype), full)
        head = decoder.embed_tokens.weight  # Whisper ties its output head to the token embeddings
        blocked = torch.zeros(head.shape[0], dtype=torch.bool, device=head.device)
        blocked[[t for t in config.asr_suppress_tokens if t < head.shape[0]]] = True
        first_blocked = blocked.clone()
        first_blocked[[t for t in config.asr_begin_suppress_tokens if t < head.shape[0]]] = True
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        step_input = torch.tensor(config.asr_prompt_ids, device=features.device).expand(windows, -1)
        finished = torch.zeros(windows, dtype=torch.bool, device=features.device)
        states, tokens, alive, top = [], [], [], []
        k = config.asr_token_mixture
        for step in range(int(slots.max())):
            hidden = decoder(input_ids=step_input, encoder_hidden_states=encoded, cache=cache, use_cache=True).last_hidden_state[:, -1]
            logits = (hidden @ head.T).float().masked_fill(first_blocked if step == 0 else blocked, float("-inf"))
            chosen = logits.argmax(-1)
            finished |= (chosen == config.asr_eos_token_id) | (step >= slots)
            if bool(finished.all()):
                break
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

    def get_audio_features(
        self,
        input_features: torch.Tensor,
        input_features_mask: torch.Tensor,
        audio_window_clip: torch.Tensor,
        audio_spans: torch.Tensor | None = None,
        token_ids_out: list | None = None,
    ) -> list[torch.Tensor]:
        """Per-clip LLM-space embeddings, in clip order; clip ``c`` gets ``layout.num_embeddings`` rows
        (``downsample="asr_tokens"``: one per decoded token, at most that many; ``token_ids_out``, when
        given, receives each clip's decoded ASR token ids)."""
        top: list | None = [] if self.projector.token_mixture else None
        frames, lengths = self.get_audio_frames(input_features, input_features_mask, audio_window_clip, token_ids_out, top)
        projected = self.projector(frames, lengths, audio_spans)
        if top is None:
            return projected
        table = self.get_input_embeddings().weight
        return [p + self.projector.mix_tokens(scores, ids, self.asr_token_map, table).to(p.dtype)
                for p, (scores, ids) in zip(projected, top)]

    def get_audio_frames(
        self,
        input_features: torch.Tensor,
        input_features_mask: torch.Tensor,
        audio_window_clip: torch.Tensor,
        token_ids_out: list | None = None,
        top_out: list | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """What the projector reads: per clip, its encoder frames (windows concatenated) or, for
        ``downsample="asr_tokens"``, the ASR decoder's states; padded (clips, n, dim) and the valid counts.
        ``token_ids_out`` / ``top_out`` receive each clip's ASR tokens / top-k (scores, ids)."""
        step = max(1, self.config.encoder_forward_batch)
        asr = self.config.downsample == "asr_tokens"
        hidden_parts, token_parts, top_parts = [], [], []
        for i in range(0, input_features.shape[0], step):
            if asr:
                h, t, top = self._asr_token_states(input_features[i : i + step], input_features_mask[i : i + step])
                hidden_parts.extend(h)
                token_parts.extend(t)
                top_parts.extend(top)
                continue
            h, n = self._encode_windows(input_features[i : i + step], input_features_mask[i : i + step])
            hidden_parts.extend(h[j, : int(n[j])] for j in range(h.shape[0]))
        clip_ids = audio_window_clip.tolist()
        num_clips = max(clip_ids) + 1
        per_clip = [torch.cat([hidden_parts[w] for w, c in enumerate(clip_ids) if c == k]) for k in range(num_clips)]
        of_clip = lambda parts, k: [p for p, c in zip(parts, clip_ids) if c == k]  # noqa: E731
        if asr and token_ids_out is not None:
            token_ids_out.extend(torch.cat(of_clip(token_parts, k)) for k in range(num_clips))
        if asr and top_out is not None:
            top_out.extend(tuple(torch.cat(part) for part in zip(*of_clip(top_parts, k))) for k in range(num_clips))
        lengths = torch.tensor([p.shape[0] for p in per_clip], device=input_features.device)
        return nn.utils.rnn.pad_sequence(per_clip, batch_first=True), lengths

    def embed_inputs(
        self,
        input_ids: torch.LongTensor,
        input_features: torch.Tensor | None = None,
        input_features_mask: torch.Tensor | None = None,
        audio_window_clip: torch.Tensor | None = None,
        audio_spans: torch.Tensor | None = None,
        clips_out: list | None = None,
        attention_mask: torch.Tensor | None = None,
        token_ids_out: list | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Token embeddings with each run of audio placeholders replaced by its clip's embeddings.

        Returns ``(inputs_embeds, attention_mask)``. The mask is the given one, except that with
        ``downsample="asr_tokens"`` the slots a clip's decoding did not fill are masked out (their positions
        are then skipped by the position ids too, so the LLM sees exactly the decoded tokens' embeddings).
        ``clips_out`` / ``token_ids_out``, when given, receive the per-clip audio embeddings / ASR token ids.
        """
        placeholder = input_ids == self.config.audio_token_id
        embeds = self.get_input_embeddings()(input_ids.masked_fill(placeholder, 0))
        n_placeholders = int(placeholder.sum())
        if input_features is None:
            if n_placeholders:
                raise ValueError(f"input_ids hold {n_placeholders} audio placeholder tokens but no audio features were given.")
            return embeds, attention_mask
        if input_features_mask is None or audio_window_clip is None:
            raise ValueError("input_features need input_features_mask and audio_window_clip (use AudioMiniChatProcessor).")
        clips = self.get_audio_features(
            input_features, input_features_mask, audio_window_clip, audio_spans, token_ids_out=token_ids_out
        )
        if clips_out is not None:
            clips_out.extend(clips)
        slots = self._clip_slots(input_features_mask, audio_window_clip) if self.config.downsample == "asr_tokens" else None
        if slots is not None:
            filled = torch.cat([torch.arange(n, device=embeds.device) < c.shape[0] for c, n in zip(clips, slots)])
            clips = [nn.functional.pad(c, (0, 0, 0, n - c.shape[0])) for c, n in zip(clips, slots)]
        audio = torch.cat(clips)
        if audio.shape[0] != n_placeholders:
            raise ValueError(
                f"The prompt holds {n_placeholders} audio placeholder tokens but the audio yields {audio.shape[0]} "
                "embeddings; build inputs with the processor of this model (same audio layout)."
            )
        embeds = embeds.masked_scatter(placeholder.unsqueeze(-1), audio.to(embeds.dtype))
        if slots is not None and not bool(filled.all()):
            unused = torch.zeros_like(placeholder)
            unused[placeholder] = ~filled
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            attention_mask = attention_mask.masked_fill(unused, 0)
        return embeds, attention_mask

    def _window_slots(self, input_features_mask: torch.Tensor) -> list[int]:
        """downsample="asr_tokens": each window's token slots, from its audio frames (the processor's mask)."""
        return [self.projector.layout.window_token_slots(int(n)) for n in input_features_mask.sum(-1).tolist()]

    def _clip_slots(self, input_features_mask: torch.Tensor, audio_window_clip: torch.Tensor) -> list[int]:
        """downsample="asr_tokens": each clip's placeholder count (its windows' token slots)."""
        slots = [0] * (int(audio_window_clip.max()) + 1)
        for window_slots, clip in zip(self._window_slots(input_features_mask), audio_window_clip.tolist()):
            slots[clip] += window_slots
        return slots

    # ---- forward / generate -------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        input_features: torch.Tensor | None = None,
        input_features_mask: torch.Tensor | None = None,
        audio_window_clip: torch.Tensor | None = None,
        audio_spans: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        output_audio_embeddings: bool = False,
        audio_only: bool = False,
        **kwargs,
    ):
        """The LLM's output on the prompt with audio embedded.

        ``output_audio_embeddings=True`` adds each clip's audio embeddings (``audio_embeddings``, clip order);
        ``audio_only=True`` returns only those and skips the LLM (e.g. for a loss on the embeddings alone).
        """
        if audio_only:
            if input_features is None:
                raise ValueError("audio_only=True needs input_features.")
            tokens = [] if self.config.downsample == "asr_tokens" else None
            clips = self.get_audio_features(
                input_features, input_features_mask, audio_window_clip, audio_spans, token_ids_out=tokens
            )
            return AudioMiniChatOutput(audio_embeddings=tuple(clips), audio_token_ids=None if tokens is None else tuple(tokens))
        clips = [] if output_audio_embeddings else None
        tokens = [] if output_audio_embeddings and self.config.downsample == "asr_tokens" else None
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("Pass input_ids (from AudioMiniChatProcessor) or inputs_embeds.")
            inputs_embeds, attention_mask = self.embed_inputs(
                input_ids, input_features, input_features_mask, audio_window_clip, audio_spans, clips_out=clips,
                attention_mask=attention_mask, token_ids_out=tokens,
            )
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        context = getattr(self.config.text_config, "max_position_embeddings", None)
        if context is not None and attention_mask is not None and attention_mask.shape[-1] > context:
            raise ValueError(
                f"The sequence is {attention_mask.shape[-1]} tokens long but the LLM's context is {context} tokens."
            )
        if attention_mask is not None and kwargs.get("position_ids") is None and attention_mask.ndim == 2:
            # Positions count real tokens only, so a left-padded row sees the same positions as alone.
            positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
            kwargs["position_ids"] = positions[:, -inputs_embeds.shape[1] :]
        outputs = self.language_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs)
        if labels is not None:
            outputs.loss = self.loss_function(
                logits=outputs.logits,
                labels=labels,
                vocab_size=self.config.text_config.vocab_size,
                num_items_in_batch=num_items_in_batch,
            )
        if output_audio_embeddings:
            outputs = AudioMiniChatOutput(
                **{**outputs, "loss": outputs.loss},
                audio_embeddings=tuple(clips or ()),
                audio_token_ids=None if tokens is None else tuple(tokens),
            )
        return outputs

    def generate(self, input_ids=None, attention_mask=None, input_features=None, input_features_mask=None,
                 audio_window_clip=None, audio_spans=None, **kwargs):
        """``GenerationMixin.generate`` on prompts with audio.

        With ``downsample="asr_tokens"`` the prompt is embedded here, once, so that generation keeps the
        attention mask that hides unfilled audio slots; otherwise audio is encoded in the first forward.
        """
        audio = {"input_features": input_features, "input_features_mask": input_features_mask,
                 "audio_window_clip": audio_window_clip, "audio_spans": audio_spans}
        if input_features is None or self.config.downsample != "asr_tokens":
            return super().generate(input_ids=input_ids, attention_mask=attention_mask, **audio, **kwargs)
        inputs_embeds, attention_mask = self.embed_inputs(input_ids, **audio, attention_mask=attention_mask)
        return super().generate(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs)

    def set_asr_token_map(self, asr_tokenizer, llm_tokenizer) -> None:
        """downsample="asr_tokens": map each ASR text token to the LLM token of its text's first piece.

        The map (a buffer saved with the model) gives training its targets: the LLM's own embedding of the
        token the ASR decoder wrote (``train_trainer``'s ``asr_embed`` loss). Special tokens map to -1.
        """
        table = torch.full_like(self.asr_token_map, -1)
        # control tokens (Whisper: specials, language and task tags, timestamps) are the tokenizer's added tokens
        special = set(asr_tokenizer.all_special_ids) | set(asr_tokenizer.added_tokens_decoder) | set(self.config.asr_prompt_ids or [])
        for token_id in range(min(table.numel(), len(asr_tokenizer))):
            if token_id in special:
                continue
            text = asr_tokenizer.decode([token_id])
            pieces = llm_tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
            if pieces:
                table[token_id] = pieces[0]
        self.asr_token_map.copy_(table)

    def prepare_inputs_for_generation(self, *args, inputs_embeds=None, is_first_iteration: bool | None = False, **kwargs):
        """Audio goes in with the prompt only: later decoding steps reuse the KV cache, so audio is encoded once
        (``inputs_embeds``: a prompt already embedded by :meth:`generate`)."""
        audio = {name: kwargs.pop(name, None) for name in self._audio_input_names}
        model_inputs = super().prepare_inputs_for_generation(
            *args, inputs_embeds=inputs_embeds, is_first_iteration=is_first_iteration, **kwargs
        )
        first = is_first_iteration or not kwargs.get("use_cache", True)
        for name, value in audio.items():
            model_inputs[name] = value if first else None
        return model_inputs

    # ---- construction from pretrained parts ----------------------------------------------------------
    @classmethod
    def from_components(
        cls,
        language_model: PreTrainedModel,
        audio_encoder: PreTrainedModel,
        audio_token_id: int,
        **config_kwargs,
    ) -> "AudioMiniChatForConditionalGeneration":
        """Assemble a model around an existing LLM and encoder (their weights are kept, not copied).

        ``audio_encoder`` may be a full ASR model (e.g. ``WhisperForConditionalGeneration`` or
        ``HubertForCTC``): its bare encoder is used. The projector is freshly initialised.
        """
        encoder, decoder = audio_encoder, None
        if hasattr(encoder, "get_encoder"):  # encoder-decoder ASR models (Whisper)
            decoder = encoder.get_decoder() if hasattr(encoder, "get_decoder") else None
            if config_kwargs.get("downsample") == "asr_tokens":
                config_kwargs = {**_asr_decoding_options(audio_encoder), **config_kwargs}
            encoder = encoder.get_encoder()
        elif getattr(encoder, "base_model", None) is not None and encoder.base_model is not encoder:
            encoder = encoder.base_model  # CTC heads (HuBERT / wav2vec2)
        config = AudioMiniChatConfig(
            audio_config=encoder.config.to_dict(),
            text_config=language_model.config.to_dict(),
            audio_token_id=audio_token_id,
            **config_kwargs,
        )
        with torch.device("meta"):
            model = cls(config)
        model.audio_encoder = encoder
        if config.downsample == "asr_tokens":
            if decoder is None:
                raise ValueError("downsample='asr_tokens' needs an encoder-decoder ASR model (e.g. WhisperForConditionalGeneration).")
            model.asr_decoder = decoder
            model.register_buffer("asr_token_map", _unset_asr_token_map(config))  # a real tensor, not meta
        model.language_model = language_model
        model.projector = AudioProjector(config)
        model.projector.apply(model._init_weights)
        model.generation_config = language_model.generation_config
        return model

    def save_pretrained(self, save_directory, *args, **kwargs):
        # Record the pipeline so that `pipeline(model=dir, trust_remote_code=True)` finds it.
        self.config.custom_pipelines = {
            PIPELINE_TASK: {"impl": "pipeline_audio_minichat.AudioMiniChatPipeline", "pt": ["AutoModel"], "tf": [], "type": "multimodal"}
        }
        return super().save_pretrained(save_directory, *args, **kwargs)


def _unset_asr_token_map(config: AudioMiniChatConfig) -> torch.Tensor:
    """The ASR-token -> LLM-token map before ``set_asr_token_map``: every token unmapped (-1)."""
    return torch.full((config.audio_config.vocab_size,), -1, dtype=torch.long)


def _asr_decoding_options(asr_model: PreTrainedModel) -> dict:
    """How an encoder-decoder ASR model decodes English without timestamps, from its generation config."""
    gen = asr_model.generation_config
    prompt = [gen.decoder_start_token_id]
    if getattr(gen, "is_multilingual", False):
        prompt += [gen.lang_to_id["<|en|>"], gen.task_to_id["transcribe"]]
    no_timestamps = getattr(gen, "no_timestamps_token_id", None)
    if no_timestamps is not None:
        prompt.append(no_timestamps)
    eos = gen.eos_token_id[0] if isinstance(gen.eos_token_id, (list, tuple)) else gen.eos_token_id
    return {
        "asr_prompt_ids": prompt,
        "asr_eos_token_id": eos,
        "asr_suppress_tokens": list(getattr(gen, "suppress_tokens", None) or []),
        "asr_begin_suppress_tokens": list(getattr(gen, "begin_suppress_tokens", None) or []),
    }


AudioMiniChatConfig.register_for_auto_class()
AudioMiniChatForConditionalGeneration.register_for_auto_class("AutoModel")
register_pipeline(AudioMiniChatPipeline)

__all__ = ["AudioMiniChatForConditionalGeneration", "AudioMiniChatOutput", "AudioMiniChatPreTrainedModel", "AudioProjector", "span_means"]
