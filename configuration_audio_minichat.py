"""Configuration of AudioMiniChat: a speech encoder, an audio front end and a frozen causal LLM.

The ground floor of the model core: it imports no torch module and no modeling code, only the front ends' options
classes (``frontend_<name>_config.py``). How many LLM embeddings a clip yields is decided by the front end's options
(``config.frontend_options.num_embeddings(layout, ...)``) over the common :class:`AudioLayout` (windows, frames);
the processor uses it to expand each ``<|audio|>`` placeholder and the model produces exactly that many
embeddings; a test checks both.
"""

from __future__ import annotations

import math

from transformers import AutoConfig, PreTrainedConfig
from transformers.models.auto import CONFIG_MAPPING

from .frontend_asr_tokens_config import AsrTokensConfig
from .frontend_config import ASR_DECODER_TYPES, AudioLayout, FrontEndConfig  # noqa: F401 (AudioLayout: re-exported)
from .frontend_ctc_pool_config import CtcPoolConfig
from .frontend_pool_config import PoolConfig
from .frontend_posterior_config import PosteriorConfig
from .frontend_qformer_config import QFormerConfig
from .frontend_stack_config import StackConfig

# The registry of the audio front ends' options (one line each; the modules' registry is frontends.py).
FRONTEND_CONFIGS = {c.name: c for c in (PoolConfig, StackConfig, CtcPoolConfig, AsrTokensConfig, QFormerConfig, PosteriorConfig)}
DEFAULT_FRONTEND = "pool"
DEFAULT_AUDIO_TOKEN = "<|audio|>"  # the placeholder written in prompts where audio goes
PIPELINE_TASK = "audio-minichat"  # the pipeline's task (pipeline_audio_minichat.py; named in saved configs by the model)
PROJECTOR_TYPES = ("linear", "mlp", "conv_mlp", "attn_mlp")  # frontend_base.AudioProjector

# How each encoder family turns samples into frames (its feature kind).  Keyed by ``audio_config.model_type``: this is
# a table of facts about architectures, read once here, not a branch on a checkpoint name.
#   "mel":  log-mel features (hop ``mel_hop_length``) then the convolutions listed in ``convs``
#           (kernel, stride, padding) and a positional table of ``max_source_positions`` frames.
#   "conv": the raw waveform (``input_values``) into convolutions described by ``conv_kernel`` / ``conv_stride``.
ENCODER_FEATURE_KINDS = {
    "whisper": "mel",
    "hubert": "conv",
    "wav2vec2": "conv",
    "wavlm": "conv",
    "data2vec-audio": "conv",
}
WHISPER_CONVS = ((3, 1, 1), (3, 2, 1))

# Old names of keys in config.json / processor_config.json (before the front ends' options moved into
# ``frontend_config``; a front end's own old names are its options class's ``legacy_keys``): read by
# upgrade_legacy_keys, and only there. Old files also hold every front end's options as top-level keys.
LEGACY_KEYS = {"downsample": "audio_frontend", "frontend": "feature_kind"}


def frontend_config_class(name: str) -> type[FrontEndConfig]:
    """The options class of the front end registered as ``name`` (a ValueError naming the choices otherwise)."""
    if name not in FRONTEND_CONFIGS:
        raise ValueError(f"audio_frontend must be one of {tuple(FRONTEND_CONFIGS)}, got {name!r}.")
    return FRONTEND_CONFIGS[name]


def upgrade_legacy_keys(values: dict) -> dict:
    """``values`` (config kwargs or an audio layout dict) with old key names renamed and old top-level front-end
    options gathered into ``frontend_config``. Options of another front end than the named one are dropped when
    they hold their default (old files wrote every front end's options); otherwise they are refused."""
    out = dict(values)
    renames = {**LEGACY_KEYS, **{old: new for c in FRONTEND_CONFIGS.values() for old, new in c.legacy_keys.items()}}
    for old, new in renames.items():
        if old in out:
            value = out.pop(old)
            if out.get(new) is not None and out[new] != value:
                raise ValueError(f"{old!r} (the old name of {new!r}) is {value!r} but {new!r} is {out[new]!r}.")
            out[new] = value
    all_options = {n for c in FRONTEND_CONFIGS.values() for n in c.option_names()}
    flat = {k: out.pop(k) for k in list(out) if k in all_options}
    if not flat:
        return out
    if out.get("frontend_config"):
        raise ValueError(f"Front-end options {sorted(flat)} are given both as top-level keys and in frontend_config; "
                         "give them in frontend_config.")
    cls = frontend_config_class(out.get("audio_frontend") or DEFAULT_FRONTEND)
    out["frontend_config"] = {k: v for k, v in flat.items() if k in cls.option_names()}
    for key, value in flat.items():
        if key in cls.option_names():
            continue
        owner = next(c for c in FRONTEND_CONFIGS.values() if key in c.option_names())
        if owner.from_dict({key: value}).to_dict()[key] != owner().to_dict()[key]:
            raise ValueError(f"{key} is an option of audio_frontend={owner.name!r}, not of {cls.name!r}.")
    return out


def read_audio_layout(layout: dict, audio_frontend: str | None = None, frontend_config: dict | None = None
                      ) -> tuple[AudioLayout, FrontEndConfig]:
    """The processor's saved audio layout and front end -> (:class:`AudioLayout`, the front end's options). An old
    processor_config.json kept the front end and its options inside the layout (``downsample``, ``pool_kernel``...)."""
    values = upgrade_legacy_keys({**layout, "audio_frontend": audio_frontend, "frontend_config": frontend_config})
    name = values.pop("audio_frontend", None) or DEFAULT_FRONTEND
    options = frontend_config_class(name).from_dict(values.pop("frontend_config", None))
    return AudioLayout.from_dict(values), options


class AudioMiniChatConfig(PreTrainedConfig):
    r"""Configuration of :class:`AudioMiniChatForConditionalGeneration`.

    Args:
        audio_config: config (or dict) of the speech encoder: Whisper, HuBERT, wav2vec2 (WavLM and
            data2vec-audio work the same way). Defaults to a Whisper encoder config.
        text_config: config (or dict) of any Llama-family causal LM. Defaults to a Llama config.
        audio_frontend: the front end that turns the encoder's windows into LLM embeddings (``FRONTEND_CONFIGS``):
            ``"pool"`` (average pool, the paper's default), ``"stack"`` (concatenate frames), ``"ctc_pool"`` (mean
            over given frame spans, e.g. CTC words), ``"asr_tokens"`` (Whisper's greedy decoding, one embedding per
            token) or ``"qformer"`` (learned queries read the encoder through a copy of Whisper's decoder).
        frontend_config: that front end's options as a dict (its ``frontend_<name>_config.py`` declares them, with
            their defaults and checks); missing options take their defaults. Old files' top-level options
            (``pool_kernel``, ``qformer_queries``, ...) and ``downsample`` are read into these two
            (:func:`upgrade_legacy_keys`).
        projector_type: ``"linear"`` (the paper), ``"mlp"`` (linear-GELU-linear) or ``"conv_mlp"`` (the MLP with a
            residual convolution over neighbouring positions inside: temporal context; frontend_base.TemporalMix) or
            ``"attn_mlp"`` (that, then two self-attention blocks over the clip's positions: frontend_base.AttentionMix).
        projector_hidden_size: hidden width of the MLP projector (defaults to the LLM hidden size).
        audio_token: the placeholder token written in prompts where audio goes.
        audio_token_id: its id in the (extended) tokenizer; it may lie outside the LLM vocabulary.
        encoder_window_seconds: longest audio the encoder sees at once; longer clips are split into
            windows whose embeddings are concatenated. Defaults to the encoder's limit (30 s for
            Whisper) or 30 s for waveform encoders.
        min_audio_seconds: shorter (non-empty) clips are zero-padded to this length.
        mel_hop_length: hop of the log-mel features (Whisper: 160 samples).
        sampling_rate: audio sampling rate the encoder expects.
        encoder_forward_batch: at most this many windows go through the encoder in one forward.
        keep_asr_decoder: keep the decoder of an encoder-decoder ASR encoder (Whisper) in the checkpoint, so that
            it transcribes for the cascade with its own weights (front ends that read the decoder always keep it).
        asr_generation_config: how that ASR model generates (its ``GenerationConfig`` as a dict).
        provenance: what the checkpoint was built / trained from and whether its audio path is trained (specs of
            the base models, trained-weights digest, training summary); kept in config.json so that every copy
            of a checkpoint carries it (read by the CLI and the model card).
        audio_lora: LoRA on the LLM active only for prompts that hold audio: ``{"r": 8, "alpha": 16, "targets":
            ["q_proj", "v_proj"]}`` (``audio_lora.py``); text prompts run the untouched LLM. None: no adapter.
    """

    model_type = "audio_minichat"
    sub_configs = {"audio_config": AutoConfig, "text_config": AutoConfig}

    def __init__(
        self,
        audio_config=None,
        text_config=None,
        audio_frontend: str | None = None,
        frontend_config: dict | None = None,
        projector_type: str = "linear",
        projector_hidden_size: int | None = None,
        audio_token: str = DEFAULT_AUDIO_TOKEN,
        audio_token_id: int | None = None,
        encoder_window_seconds: float | None = None,
        min_audio_seconds: float = 0.1,
        mel_hop_length: int = 160,
        sampling_rate: int = 16000,
        encoder_forward_batch: int = 8,
        keep_asr_decoder: bool = False,
        asr_generation_config: dict | None = None,
        provenance: dict | None = None,
        audio_lora: dict | None = None,
        **kwargs,
    ):
        kwargs = upgrade_legacy_keys({**kwargs, "audio_frontend": audio_frontend, "frontend_config": frontend_config})
        audio_frontend = kwargs.pop("audio_frontend") or DEFAULT_FRONTEND
        options = frontend_config_class(audio_frontend).from_dict(kwargs.pop("frontend_config"))
        if isinstance(audio_config, dict):
            audio_config = CONFIG_MAPPING[audio_config.get("model_type", "whisper")](**audio_config)
        elif audio_config is None:
            audio_config = CONFIG_MAPPING["whisper"]()
        if isinstance(text_config, dict):
            text_config = CONFIG_MAPPING[text_config.get("model_type", "llama")](**text_config)
        elif text_config is None:
            text_config = CONFIG_MAPPING["llama"]()
        if audio_config.model_type not in ENCODER_FEATURE_KINDS:
            raise ValueError(
                f"Unsupported audio encoder model_type {audio_config.model_type!r}; supported: {sorted(ENCODER_FEATURE_KINDS)}."
            )
        if projector_type not in PROJECTOR_TYPES:
            raise ValueError(f"projector_type must be one of {PROJECTOR_TYPES}, got {projector_type!r}.")
        self.audio_config = audio_config
        self.text_config = text_config
        self.audio_frontend = audio_frontend
        self.frontend_config = options.to_dict()
        self.projector_type = projector_type
        self.projector_hidden_size = projector_hidden_size
        self.audio_token = audio_token
        self.audio_token_id = audio_token_id
        self.encoder_window_seconds = encoder_window_seconds
        self.min_audio_seconds = float(min_audio_seconds)
        self.mel_hop_length = int(mel_hop_length)
        self.sampling_rate = int(sampling_rate)
        self.encoder_forward_batch = int(encoder_forward_batch)
        self.keep_asr_decoder = bool(keep_asr_decoder)
        self.asr_generation_config = None if asr_generation_config is None else dict(asr_generation_config)
        self.provenance = dict(provenance or {})
        # LoRA on the LLM that is active only for prompts holding audio ({"r", "alpha", "targets"}; None: none):
        # text prompts run the untouched LLM (audio_lora.py)
        self.audio_lora = None if not audio_lora else dict(audio_lora)
        super().__init__(**kwargs)
        options.check(self)
        if self.has_asr_decoder and self.audio_config.model_type not in ASR_DECODER_TYPES:
            raise ValueError(
                f"keep_asr_decoder needs an encoder-decoder ASR model (Whisper); the audio encoder is {self.audio_config.model_type!r}."
            )

    # ---- derived facts ---------------------------------------------------------------------------
    @property
    def frontend_options(self) -> FrontEndConfig:
        """The front end's options (its ``frontend_<name>_config.py`` class) from ``frontend_config``."""
        return frontend_config_class(self.audio_frontend).from_dict(self.frontend_config)

    @property
    def has_asr_decoder(self) -> bool:
        """Whether the checkpoint holds the encoder's ASR decoder (kept for the cascade, or read by the front end)."""
        return self.keep_asr_decoder or frontend_config_class(self.audio_frontend).reads_asr_decoder

    @property
    def feature_kind(self) -> str:
        """What the encoder reads: ``"mel"`` features or the raw waveform (``"conv"``)."""
        return ENCODER_FEATURE_KINDS[self.audio_config.model_type]

    def audio_layout(self) -> AudioLayout:
        """The sample -> window -> frame arithmetic of this model (see :class:`AudioLayout`)."""
        sr = self.sampling_rate
        if self.feature_kind == "mel":
            convs = WHISPER_CONVS
            stride_total = math.prod(s for _, s, _ in convs)
            max_frames = self.audio_config.max_source_positions * stride_total
            limit = max_frames * self.mel_hop_length
            samples_per_frame = self.mel_hop_length * stride_total
        else:
            convs = tuple(
                (int(k), int(s), 0) for k, s in zip(self.audio_config.conv_kernel, self.audio_config.conv_stride)
            )
            limit = None
            samples_per_frame = math.prod(s for _, s, _ in convs)
        window = int(round((self.encoder_window_seconds or 30.0) * sr))
        if limit is not None:
            window = min(window, limit)
        min_samples = max(int(round(self.min_audio_seconds * sr)), samples_per_frame + 400)
        return AudioLayout(
            sampling_rate=sr,
            window_samples=window,
            min_samples=min_samples,
            feature_kind=self.feature_kind,
            mel_hop_length=self.mel_hop_length,
            convs=convs,
            samples_per_frame=samples_per_frame,
            pad_windows=frontend_config_class(self.audio_frontend).pad_windows,
        )


# A process that has this class knows the model type: a tokenizer or config loaded from a checkpoint folder then
# needs no remote-code prompt (the package's own __init__ registers the model, processor and pipeline on first use).
AutoConfig.register(AudioMiniChatConfig.model_type, AudioMiniChatConfig, exist_ok=True)

__all__ = ["AudioMiniChatConfig", "AudioLayout", "DEFAULT_AUDIO_TOKEN", "FRONTEND_CONFIGS", "frontend_config_class",
           "read_audio_layout", "upgrade_legacy_keys"]
