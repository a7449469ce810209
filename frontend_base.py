"""What every audio front end of AudioMiniChat is, and the pieces the front ends share.

A front end turns the processor's encoder windows into, for every clip, exactly as many LLM-space embeddings as
the processor wrote ``<|audio|>`` placeholders for (``AudioLayout.num_embeddings``, which asks the front end's
own options' ``num_embeddings``: ``frontend_<name>_config.py``), plus a fill mask: which of those slots hold audio
(the model masks the others out of attention and position ids). The model picks one front end class from
``config.audio_frontend`` (``frontends.py``) and never branches on it again.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel
from transformers.modeling_outputs import ModelOutput
from transformers.models.whisper.modeling_whisper import WhisperDecoder, WhisperEncoder, WhisperForConditionalGeneration

from .frontend_config import ASR_DECODER_TYPES, FrontEndConfig

# Facts about encoder architectures, by the audio config's model_type (tables, not branches on checkpoint names):
# the bare encoder stack of "mel" encoders, the decoder of encoder-decoder ASR models, and the ASR model class
# that holds both (the cascade's transcriber, rebuilt around this checkpoint's own encoder and decoder).
MEL_ENCODER_CLASSES = {"whisper": WhisperEncoder}
ASR_DECODER_CLASSES = {"whisper": WhisperDecoder}
ASR_MODEL_CLASSES = {"whisper": WhisperForConditionalGeneration}
assert set(ASR_DECODER_CLASSES) == set(ASR_DECODER_TYPES) == set(ASR_MODEL_CLASSES)  # the options' table, by name


@dataclass
class AudioFrontEndOutput(ModelOutput):
    """Per clip (clip order): ``embeddings`` (slots, LLM hidden), ``fill_mask`` (slots,) which slots hold audio,
    and, for front ends that read ASR tokens, ``token_ids`` (the ASR token behind each filled slot)."""

    embeddings: tuple[torch.Tensor, ...] | None = None
    fill_mask: tuple[torch.Tensor, ...] | None = None
    token_ids: tuple[torch.Tensor, ...] | None = None

    def filled_embeddings(self) -> tuple[torch.Tensor, ...]:
        """Per clip, the embeddings of the filled slots only (what the LLM reads)."""
        return tuple(e[m] for e, m in zip(self.embeddings, self.fill_mask))


class TemporalMix(nn.Module):
    """A residual block over neighbouring positions (the second-to-last axis of (..., positions, dim)): a depthwise
    convolution of ``TEMPORAL_KERNEL`` positions, GELU, a linear map, added to the input. Its output map starts at zero,
    so a projector with it starts as the plain MLP. The positions are one sequence: callers give one clip at a time
    (``AudioProjector.per_sequence``)."""

    def __init__(self, dim: int, kernel: int):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.out = nn.Linear(dim, dim)

    def init_weights(self, std: float) -> None:
        nn.init.normal_(self.conv.weight, mean=0.0, std=1.0 / self.conv.kernel_size[0])
        nn.init.zeros_(self.conv.bias)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        seq = x.reshape(-1, shape[-2], shape[-1]).transpose(1, 2)  # (sequences, dim, positions)
        mixed = nn.functional.gelu(self.conv(seq)).transpose(1, 2).reshape(shape)
        return x + self.out(mixed)


TEMPORAL_KERNEL = 5  # positions a TemporalMix convolution reads (2 on each side: 160 ms either way at 80 ms a position)
ATTENTION_WIDTH, ATTENTION_HEADS = 256, 4  # an AttentionMix block's own width and heads (small: the head ships)


class AttentionMix(nn.Module):
    """A residual transformer block over the positions of one clip (the second-to-last axis of (..., positions,
    dim)), at its own narrow width: a linear map down to ``ATTENTION_WIDTH``, pre-norm self-attention over every
    position and a GELU feed-forward of twice that width (each added to its input), a linear map back up, added to
    the block's input. The map back up starts at zero, so a projector with this block starts as the same projector
    without it (a head trained without it seeds one with it). No positional table: order comes from the encoder's
    frames and the TemporalMix before it. Callers give one clip at a time (``AudioProjector.per_sequence``)."""

    def __init__(self, dim: int, width: int = ATTENTION_WIDTH, heads: int = ATTENTION_HEADS):
        super().__init__()
        self.down = nn.Linear(dim, width)
        self.attn_norm = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ff_norm = nn.LayerNorm(width)
        self.ff = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
        self.up = nn.Linear(width, dim)

    def init_weights(self, std: float) -> None:
        for norm in (self.attn_norm, self.ff_norm):
            nn.init.ones_(norm.weight)
            nn.init.zeros_(norm.bias)
        for linear in (self.down, self.attn.out_proj, self.ff[0], self.ff[2]):
            nn.init.normal_(linear.weight, mean=0.0, std=std)
            nn.init.zeros_(linear.bias)
        nn.init.normal_(self.attn.in_proj_weight, mean=0.0, std=std)
        nn.init.zeros_(self.attn.in_proj_bias)
        nn.init.zeros_(self.up.weight)  # the block starts silent
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        seq = self.down(x.reshape(-1, shape[-2], shape[-1]))
        normed = self.attn_norm(seq)
        seq = seq + self.attn(normed, normed, normed, need_weights=False)[0]
        seq = seq + self.ff(self.ff_norm(seq))
        return x + self.up(seq).reshape(shape)


# The blocks of an MLP projector between its first linear map (+ GELU) and its last, by ``config.projector_type`` (one
# table: a new kind of projector is a row here): (blocks kept in ``net``, blocks kept in ``context``). The split keeps
# the names of a ``conv_mlp`` head's weights in an ``attn_mlp`` head (``net.*``), so a trained conv head seeds one with
# attention (whose blocks start silent). "linear" has no hidden layer. A projector with any block reads a clip's
# positions together (``AudioProjector.per_sequence``).
PROJECTOR_BLOCKS = {
    "mlp": lambda hidden: ([], []),
    "conv_mlp": lambda hidden: ([TemporalMix(hidden, TEMPORAL_KERNEL)], []),
    "attn_mlp": lambda hidden: ([TemporalMix(hidden, TEMPORAL_KERNEL)], [AttentionMix(hidden), AttentionMix(hidden)]),
}


class AudioProjector(nn.Module):
    """Linear map (the paper), or an MLP (linear, GELU, ``PROJECTOR_BLOCKS[projector_type]``, linear), from ``in_dim``
    to ``out_dim`` (default: the LLM's embedding size; the posterior front end's head maps onto the LLM's
    vocabulary). ``conv_mlp``: a TemporalMix block inside; ``attn_mlp``: that, then two AttentionMix blocks.
    ``per_sequence``: whether an output depends on its neighbours (then each clip goes in alone)."""

    def __init__(self, config, in_dim: int, out_dim: int | None = None):
        super().__init__()
        out_dim = out_dim or config.text_config.hidden_size
        if config.projector_type == "linear":
            local, context = [], []
            self.net = nn.Sequential(nn.Linear(in_dim, out_dim))
        else:
            hidden = config.projector_hidden_size or config.text_config.hidden_size
            local, context = PROJECTOR_BLOCKS[config.projector_type](hidden)
            self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), *local, nn.Linear(hidden, out_dim))
        self.context = nn.ModuleList(context)
        self.per_sequence = bool(local or context)

    def init_weights(self, std: float) -> None:
        for module in [*self.net, *self.context]:
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif hasattr(module, "init_weights"):  # TemporalMix, AttentionMix
                module.init_weights(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.net[:-1](x.to(self.net[0].weight.dtype))
        for block in self.context:
            hidden = block(hidden)
        return self.net[-1](hidden)


def build_encoder(audio_config) -> nn.Module:
    """The bare speech encoder of ``audio_config`` (Whisper's encoder stack, or a waveform model)."""
    cls = MEL_ENCODER_CLASSES.get(audio_config.model_type)
    return cls(audio_config) if cls is not None else AutoModel.from_config(audio_config)


def whisper_window_states(encoder: WhisperEncoder, features: torch.Tensor, mask: torch.Tensor, frame_lengths: torch.Tensor,
                          training: bool = False) -> torch.Tensor:
    """Whisper's encoder on windows shorter than its 30 s input (positions sliced, padded frames masked).

    ``WhisperEncoder.forward`` accepts only full 30 s inputs and no attention mask; this runs the same modules
    on any shorter window, with an additive mask over the padded frames (eager and SDPA attention read it the
    same way). On a full window it equals ``WhisperEncoder.forward`` (tested).
    """
    hidden = nn.functional.gelu(encoder.conv1(features)) * mask.unsqueeze(1)  # zero past each window's end
    hidden = nn.functional.gelu(encoder.conv2(hidden)).permute(0, 2, 1)
    frames = hidden.shape[1]
    if frames > encoder.embed_positions.weight.shape[0]:
        raise ValueError(f"An encoder window has {frames} frames; this encoder accepts at most {encoder.embed_positions.weight.shape[0]}.")
    hidden = hidden + encoder.embed_positions.weight[:frames].to(hidden.dtype)
    hidden = nn.functional.dropout(hidden, p=encoder.config.dropout, training=training)
    valid = torch.arange(frames, device=hidden.device).unsqueeze(0) < frame_lengths.unsqueeze(1)
    attn = torch.zeros(valid.shape, dtype=hidden.dtype, device=hidden.device)
    attn = attn.masked_fill(~valid, torch.finfo(hidden.dtype).min)[:, None, None, :].expand(-1, 1, frames, -1)
    for layer in encoder.layers:
        out = layer(hidden, attn)
        hidden = out[0] if isinstance(out, tuple) else out
    return encoder.layer_norm(hidden)


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


def group_by_clip(parts: list[torch.Tensor], audio_window_clip: torch.Tensor) -> list[torch.Tensor]:
    """Per-window tensors -> per-clip tensors (the clip's windows concatenated in order)."""
    owners = audio_window_clip.tolist()
    return [torch.cat([p for p, c in zip(parts, owners) if c == k]) for k in range(max(owners) + 1)]


class AudioFrontEnd(nn.Module):
    """The interface: a speech encoder plus whatever turns its windows into the LLM's audio embeddings.

    Subclasses set ``config_class`` (their options class, ``frontend_<name>_config.py``: its ``name`` is the
    ``config.audio_frontend`` value that picks them and its ``num_embeddings`` the count the processor writes) and
    implement ``forward``. ``self.options`` holds the model's options of this front end.
    """

    config_class: type[FrontEndConfig] = FrontEndConfig
    encoder_trainable: bool = True  # whether a gradient reaches the encoder (training may adapt it)

    @property
    def name(self) -> str:
        return self.config_class.name

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.options = config.frontend_options
        self.layout = config.audio_layout()
        self.encoder = build_encoder(config.audio_config)
        if config.has_asr_decoder:
            self.asr_decoder = ASR_DECODER_CLASSES[config.audio_config.model_type](config.audio_config)

    def adopt(self, asr_model) -> None:
        """Take the pretrained modules of ``asr_model`` (a full ASR model or a bare encoder) as they are."""
        encoder = asr_model
        if hasattr(encoder, "get_encoder"):  # encoder-decoder ASR models (Whisper)
            encoder = encoder.get_encoder()
        elif getattr(encoder, "base_model", None) is not None and encoder.base_model is not encoder:
            encoder = encoder.base_model  # CTC heads (HuBERT / wav2vec2)
        self.encoder = encoder
        if self.config.has_asr_decoder:
            if not hasattr(asr_model, "get_decoder"):
                raise ValueError(f"{self.name}: keeping the ASR decoder needs an encoder-decoder ASR model (e.g. WhisperForConditionalGeneration).")
            self.asr_decoder = asr_model.get_decoder()

    def attach_tokenizers(self, asr_tokenizer, llm_tokenizer) -> None:
        """Hook for front ends that map ASR tokens to LLM tokens; nothing to do by default."""

    def init_weights(self, std: float) -> None:
        """A fresh projector (pretrained parts are loaded, never initialised here)."""
        self.projector.init_weights(std)

    def forward(self, audio_inputs, audio_inputs_mask, audio_window_clip, audio_spans=None,
                token_table: torch.Tensor | None = None) -> AudioFrontEndOutput:
        """``audio_inputs``: the processor's windows (``input_features``: mel features, or ``input_values``: the raw
        waveform; see ``AudioLayout.feature_kind``) with their mask (``input_features_mask``)."""
        raise NotImplementedError

    # ---- two stages, for training from cached encoder states (training/feature_cache.py) ---------------
    # A front end whose work splits into a stage without trainable parameters after the encoder
    # (``encoder_states``) and a trainable stage (``embed_encoder_states``) sets ``cacheable``: with a frozen
    # encoder, stage 1 is computed once per clip and stored, and training runs stage 2 only. ``forward`` is exactly
    # stage 2 of stage 1.
    cacheable: bool = False

    def encoder_states(self, audio_inputs, audio_inputs_mask, audio_window_clip, audio_spans=None) -> list[torch.Tensor]:
        """Stage 1: per clip, a (steps, dim) tensor that depends only on the encoder and the audio."""
        raise NotImplementedError(f"audio_frontend={self.name!r} does not split into cacheable stages")

    def embed_encoder_states(self, states: list[torch.Tensor], num_samples: list[int]) -> AudioFrontEndOutput:
        """Stage 2: per-clip stage-1 states (and each clip's sample count) -> the front end's output."""
        raise NotImplementedError(f"audio_frontend={self.name!r} does not split into cacheable stages")

    adapter_lora_scope: str | None = None  # a pretrained module between encoder and LLM that LoRA may adapt

    def adapter_parameters(self, full: bool = True) -> list[nn.Parameter]:
        """What training adapts: everything between the encoder and the LLM (the projector); ``full=False``: without
        the module named by ``adapter_lora_scope`` (LoRA adapts it instead)."""
        return list(self.projector.parameters())

    def stage1_modules(self) -> list[nn.Module]:
        """The modules stage 1 runs (a cache of its output is valid only while none of them trains)."""
        return [self.encoder]

    def encoder_frames(self, audio_inputs, audio_inputs_mask, audio_window_clip) -> list[torch.Tensor]:
        """Per window (window order), the encoder's valid frames."""
        step = max(1, self.config.encoder_forward_batch)
        parts = []
        for i in range(0, audio_inputs.shape[0], step):
            hidden, n = self.encode_windows(audio_inputs[i : i + step], audio_inputs_mask[i : i + step])
            parts.extend(hidden[j, : int(n[j])] for j in range(hidden.shape[0]))
        return parts

    def window_frame_counts(self, mask: torch.Tensor) -> list[int]:
        """Each window's valid encoder frames, from its feature mask (the one rule: ``encode_windows`` and the
        per-clip counts of the posterior's slots both read it)."""
        scale = self.layout.mel_hop_length if self.layout.feature_kind == "mel" else 1
        return [self.layout.encoder_frames(int(n) * scale) for n in mask.sum(-1).tolist()]

    def encode_windows(self, features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder frames for a batch of padded windows: (windows, frames, dim) and valid frame counts."""
        layout, encoder = self.layout, self.encoder
        sample_lengths = mask.sum(-1)
        frame_lengths = torch.tensor(self.window_frame_counts(mask), device=features.device)
        dtype = next(encoder.parameters()).dtype
        if layout.feature_kind == "mel":
            return whisper_window_states(encoder, features.to(dtype), mask.to(dtype), frame_lengths, self.training), frame_lengths
        if getattr(encoder.config, "feat_extract_norm", "layer") == "group":
            # Group norm spans time: padding would change the result, so such encoders see each window alone.
            outs = [encoder(features[i : i + 1, : int(n)].to(dtype)).last_hidden_state[0] for i, n in enumerate(sample_lengths.tolist())]
            longest = max(o.shape[0] for o in outs)
            hidden = torch.stack([nn.functional.pad(o, (0, 0, 0, longest - o.shape[0])) for o in outs])
        else:
            hidden = encoder(features.to(dtype), attention_mask=mask.long()).last_hidden_state
        return hidden, frame_lengths


class EncoderFramesFrontEnd(AudioFrontEnd):
    """The paper's route: encoder frames of each clip (windows concatenated), downsampled, linearly projected.

    Subclasses give their options class (a ``FramesConfig``: ``downsampled_length``) and ``downsample``."""

    def __init__(self, config):
        super().__init__(config)
        self.projector = AudioProjector(config, self.projector_input_size(config))

    @classmethod
    def projector_input_size(cls, config) -> int:
        return config.audio_config.hidden_size

    def downsample(self, frames: torch.Tensor, lengths: torch.Tensor, counts: list[int], spans) -> torch.Tensor:
        """(clips, frames, dim) with valid ``lengths`` -> (clips, max(counts), dim')."""
        raise NotImplementedError

    cacheable = True

    def encoder_states(self, audio_inputs, audio_inputs_mask, audio_window_clip, audio_spans=None):
        """Stage 1: each clip's encoder frames (windows concatenated), downsampled (parameter-free)."""
        per_clip = group_by_clip(self.encoder_frames(audio_inputs, audio_inputs_mask, audio_window_clip), audio_window_clip)
        lengths = torch.tensor([p.shape[0] for p in per_clip], device=audio_inputs.device)
        frames = nn.utils.rnn.pad_sequence(per_clip, batch_first=True)
        counts = [self.options.downsampled_length(self.layout, int(n), None if audio_spans is None else int((audio_spans[i, :, 0] >= 0).sum()))
                  for i, n in enumerate(lengths.tolist())]
        down = self.downsample(frames, lengths, counts, audio_spans)
        return [down[i, :n] for i, n in enumerate(counts)]

    def embed_encoder_states(self, states, num_samples=None):
        """Stage 2: the projector."""
        projected = self.projector(nn.utils.rnn.pad_sequence(list(states), batch_first=True))
        counts = [f.shape[0] for f in states]
        return AudioFrontEndOutput(embeddings=tuple(projected[i, :n] for i, n in enumerate(counts)),
                                   fill_mask=tuple(torch.ones(n, dtype=torch.bool, device=projected.device) for n in counts))

    def forward(self, audio_inputs, audio_inputs_mask, audio_window_clip, audio_spans=None, token_table=None):
        return self.embed_encoder_states(self.encoder_states(audio_inputs, audio_inputs_mask, audio_window_clip, audio_spans))


__all__ = ["AudioFrontEnd", "AudioFrontEndOutput", "AudioProjector", "EncoderFramesFrontEnd", "span_means", "whisper_window_states"]
