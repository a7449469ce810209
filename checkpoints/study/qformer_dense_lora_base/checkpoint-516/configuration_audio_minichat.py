"""Configuration of AudioMiniChat: a speech encoder, a downsampling projector and a frozen causal LLM.

The one place that decides how many LLM embeddings a clip of audio yields is :class:`AudioLayout`
(built from the config by :meth:`AudioMiniChatConfig.audio_layout`).  The processor uses it to expand
each ``<|audio|>`` placeholder and the model produces exactly that many embeddings; a test checks both.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from transformers import AutoConfig, PreTrainedConfig
from transformers.models.auto import CONFIG_MAPPING

from .frontend_base import ASR_DECODER_CLASSES
from .frontends import AUDIO_FRONTENDS, frontend_class

DOWNSAMPLE_METHODS = tuple(AUDIO_FRONTENDS)
DEFAULT_AUDIO_TOKEN = "<|audio|>"  # the placeholder written in prompts where audio goes
PROJECTOR_TYPES = ("linear", "mlp")

# How each encoder family turns samples into frames.  Keyed by ``audio_config.model_type``: this is a
# table of facts about architectures, read once here, not a branch on a checkpoint name.
#   "mel":  log-mel frontend (hop ``mel_hop_length``) then the convolutions listed in ``convs``
#           (kernel, stride, padding) and a positional table of ``max_source_positions`` frames.
#   "conv": raw-waveform convolutional frontend described by ``conv_kernel`` / ``conv_stride``.
ENCODER_FRONTENDS = {
    "whisper": "mel",
    "hubert": "conv",
    "wav2vec2": "conv",
    "wavlm": "conv",
    "data2vec-audio": "conv",
}
WHISPER_CONVS = ((3, 1, 1), (3, 2, 1))


@dataclass(frozen=True)
class AudioLayout:
    """Pure arithmetic from a clip's sample count to its number of LLM embeddings.

    A clip is split into ``ceil(n / window_samples)`` windows of nearly equal length (no tiny tail
    window), each window is encoded on its own, the encoder frames of all windows of the clip are
    concatenated, and the downsampler turns ``F`` frames into the embedding count below.
    """

    sampling_rate: int
    window_samples: int
    min_samples: int
    frontend: str  # "mel" or "conv"
    mel_hop_length: int = 160
    convs: tuple = ()  # ((kernel, stride, padding), ...) applied after the frontend / as the frontend
    samples_per_frame: int = 320
    downsample: str = "pool"
    pool_kernel: int = 8
    pool_stride: int = 4
    stack_factor: int = 4
    # downsample="asr_tokens": embedding slots per second of a window (frontend_asr_tokens.window_token_slots)
    tokens_per_second: float = 6.0
    # downsample="qformer": queries per full window (frontend_qformer.QFormerFrontEnd.queries_for)
    queries_per_window: int = 100
    # Whether each window's features are padded to the full window (Whisper's decoder expects 30 s inputs).
    pad_windows: bool = False

    # ---- windows -------------------------------------------------------------------------------
    def split_windows(self, num_samples: int) -> list[tuple[int, int]]:
        """(start, end) sample ranges of the encoder windows of a clip of ``num_samples`` samples."""
        n = max(int(num_samples), self.min_samples)
        k = max(1, math.ceil(n / self.window_samples))
        base, extra = divmod(n, k)
        bounds, start = [], 0
        for i in range(k):
            end = start + base + (1 if i < extra else 0)
            bounds.append((start, end))
            start = end
        return bounds

    # ---- frames ----------------------------------------------------------------------------------
    def feature_frames(self, window_samples: int) -> int:
        """Frames the feature extractor yields for one window (mel frames or raw samples)."""
        return self.audio_frames(self.window_samples if self.pad_windows else window_samples)

    def audio_frames(self, window_samples: int) -> int:
        """Feature frames that hold the window's audio (the processor's ``input_features_mask``)."""
        if self.frontend == "mel":
            return window_samples // self.mel_hop_length
        return window_samples

    def encoder_frames(self, window_samples: int) -> int:
        """Encoder output frames for one window."""
        length = self.feature_frames(window_samples)
        for kernel, stride, padding in self.convs:
            length = (length + 2 * padding - kernel) // stride + 1
        return max(length, 0)

    def clip_frames(self, num_samples: int) -> int:
        return sum(self.encoder_frames(e - s) for s, e in self.split_windows(num_samples))

    # ---- embeddings ------------------------------------------------------------------------------
    @property
    def needs_spans(self) -> bool:
        """Whether each clip needs its frame spans (``audio_spans``) to be counted and embedded."""
        return frontend_class(self.downsample).needs_spans

    def num_embeddings(self, num_samples: int, num_spans: int | None = None) -> int:
        """THE number of LLM embeddings (placeholder tokens) for a clip of ``num_samples`` samples.

        The arithmetic belongs to the front end that ``downsample`` names (its ``num_embeddings``); for front ends
        that fill fewer slots than they have (``asr_tokens``: one per decoded token), the model masks the rest out
        of attention, so they change nothing.
        """
        return frontend_class(self.downsample).num_embeddings(self, num_samples, num_spans)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["convs"] = [list(c) for c in self.convs]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "AudioLayout":
        d = dict(d)
        d["convs"] = tuple(tuple(c) for c in d.get("convs", ()))
        return cls(**d)


class AudioMiniChatConfig(PreTrainedConfig):
    r"""Configuration of :class:`AudioMiniChatForConditionalGeneration`.

    Args:
        audio_config: config (or dict) of the speech encoder: Whisper, HuBERT, wav2vec2 (WavLM and
            data2vec-audio work the same way). Defaults to a Whisper encoder config.
        text_config: config (or dict) of any Llama-family causal LM. Defaults to a Llama config.
        downsample: ``"pool"`` (average pool, the paper's default), ``"stack"`` (concatenate
            ``stack_factor`` frames), ``"ctc_pool"`` (mean over given frame spans, e.g. CTC words) or
            ``"asr_tokens"`` (an encoder-decoder ASR model such as Whisper reads the audio greedily and the
            decoder's hidden state at each token it writes becomes one embedding; no text is passed on).
        pool_kernel, pool_stride: average-pool kernel and stride in encoder frames (paper: 8 and 4).
        stack_factor: frames concatenated per embedding for ``downsample="stack"``.
        projector_type: ``"linear"`` (the paper) or ``"mlp"`` (linear-GELU-linear).
        projector_hidden_size: hidden width of the MLP projector (defaults to the LLM hidden size).
        audio_token: the placeholder token written in prompts where audio goes.
        audio_token_id: its id in the (extended) tokenizer; it may lie outside the LLM vocabulary.
        encoder_window_seconds: longest audio the encoder sees at once; longer clips are split into
            windows whose embeddings are concatenated. Defaults to the encoder's limit (30 s for
            Whisper) or 30 s for waveform encoders.
        min_audio_seconds: shorter (non-empty) clips are zero-padded to this length.
        mel_hop_length: hop of the log-mel frontend (Whisper: 160 samples).
        sampling_rate: audio sampling rate the encoder expects.
        encoder_forward_batch: at most this many windows go through the encoder in one forward.
        audio_tokens_per_second: ``"asr_tokens"`` only: embedding slots per second of audio (the most
            tokens a window may decode; unfilled slots are masked out).
        asr_prompt_ids, asr_eos_token_id, asr_suppress_tokens, asr_begin_suppress_tokens: ``"asr_tokens"``
            only: how the ASR decoder is prompted and decoded (read from its generation config when the
            model is assembled with :meth:`~AudioMiniChatForConditionalGeneration.from_components`).
        asr_token_mixture: ``"asr_tokens"`` only: with k > 0, each audio embedding is the expected LLM input
            embedding of the ASR decoder's top-k tokens at that step (softmax at a trained temperature, tokens
            mapped by ``asr_token_map``) plus the projector's output (a trained correction, starting at zero).
            0 (off): the projector's output alone.
        asr_token_pieces: ``"asr_tokens"`` with the mixture: the most LLM pieces an ASR token's text is kept as (a token
            of several pieces fills one slot per piece, so that e.g. numbers reach the LLM whole).
        keep_asr_decoder: keep the decoder of an encoder-decoder ASR encoder (Whisper) in the checkpoint, so that
            it transcribes for the cascade with its own weights (front ends that read the decoder always keep it).
        asr_generation_config: how that ASR model generates (its ``GenerationConfig`` as a dict).
        provenance: what the checkpoint was built / trained from and whether its audio path is trained (specs of
            the base models, trained-weights digest, training summary); kept in config.json so that every copy
            of a checkpoint carries it (read by the CLI and the model card).
        qformer_queries: ``downsample="qformer"``: learned queries per full encoder window (30 s); a shorter window
            gets its share (at least one).
        audio_lora: LoRA on the LLM active only for prompts that hold audio: ``{"r": 8, "alpha": 16, "targets":
            ["q_proj", "v_proj"]}`` (``audio_lora.py``); text prompts run the untouched LLM. None: no adapter.
    """

    model_type = "audio_minichat"
    sub_configs = {"audio_config": AutoConfig, "text_config": AutoConfig}

    def __init__(
        self,
        audio_config=None,
        text_config=None,
        downsample: str = "pool",
        pool_kernel: int = 8,
        pool_stride: int = 4,
        stack_factor: int = 4,
        projector_type: str = "linear",
        projector_hidden_size: int | None = None,
        audio_token: str = DEFAULT_AUDIO_TOKEN,
        audio_token_id: int | None = None,
        encoder_window_seconds: float | None = None,
        min_audio_seconds: float = 0.1,
        mel_hop_length: int = 160,
        sampling_rate: int = 16000,
        encoder_forward_batch: int = 8,
        audio_tokens_per_second: float = 6.0,
        asr_prompt_ids: list[int] | None = None,
        asr_eos_token_id: int | None = None,
        asr_suppress_tokens: list[int] | None = None,
        asr_begin_suppress_tokens: list[int] | None = None,
        asr_token_mixture: int = 0,
        asr_token_pieces: int = 1,
        keep_asr_decoder: bool = False,
        asr_generation_config: dict | None = None,
        provenance: dict | None = None,
        qformer_queries: int = 100,
        audio_lora: dict | None = None,
        **kwargs,
    ):
        if isinstance(audio_config, dict):
            audio_config = CONFIG_MAPPING[audio_config.get("model_type", "whisper")](**audio_config)
        elif audio_config is None:
            audio_config = CONFIG_MAPPING["whisper"]()
        if isinstance(text_config, dict):
            text_config = CONFIG_MAPPING[text_config.get("model_type", "llama")](**text_config)
        elif text_config is None:
            text_config = CONFIG_MAPPING["llama"]()
        if audio_config.model_type not in ENCODER_FRONTENDS:
            raise ValueError(
                f"Unsupported audio encoder model_type {audio_config.model_type!r}; supported: {sorted(ENCODER_FRONTENDS)}."
            )
        frontend = frontend_class(downsample)
        if projector_type not in PROJECTOR_TYPES:
            raise ValueError(f"projector_type must be one of {PROJECTOR_TYPES}, got {projector_type!r}.")
        if audio_tokens_per_second <= 0:
            raise ValueError(f"audio_tokens_per_second must be positive, got {audio_tokens_per_second}.")
        if min(pool_kernel, pool_stride, stack_factor) < 1:
            raise ValueError("pool_kernel, pool_stride and stack_factor must be positive integers.")
        self.audio_config = audio_config
        self.text_config = text_config
        self.downsample = downsample
        self.pool_kernel = int(pool_kernel)
        self.pool_stride = int(pool_stride)
        self.stack_factor = int(stack_factor)
        self.projector_type = projector_type
        self.projector_hidden_size = projector_hidden_size
        self.audio_token = audio_token
        self.audio_token_id = audio_token_id
        self.encoder_window_seconds = encoder_window_seconds
        self.min_audio_seconds = float(min_audio_seconds)
        self.mel_hop_length = int(mel_hop_length)
        self.sampling_rate = int(sampling_rate)
        self.encoder_forward_batch = int(encoder_forward_batch)
        self.audio_tokens_per_second = float(audio_tokens_per_second)
        self.asr_prompt_ids = None if asr_prompt_ids is None else [int(t) for t in asr_prompt_ids]
        self.asr_eos_token_id = asr_eos_token_id
        self.asr_suppress_tokens = [int(t) for t in asr_suppress_tokens or []]
        self.asr_begin_suppress_tokens = [int(t) for t in asr_begin_suppress_tokens or []]
        if asr_token_mixture < 0:
            raise ValueError(f"asr_token_mixture must be >= 0 (0: off), got {asr_token_mixture}.")
        self.asr_token_mixture = int(asr_token_mixture)
        self.asr_token_pieces = int(asr_token_pieces)
        self.keep_asr_decoder = bool(keep_asr_decoder)
        self.asr_generation_config = None if asr_generation_config is None else dict(asr_generation_config)
        self.provenance = dict(provenance or {})
        self.qformer_queries = int(qformer_queries)
        # LoRA on the LLM that is active only for prompts holding audio ({"r", "alpha", "targets"}; None: none):
        # text prompts run the untouched LLM (audio_lora.py)
        self.audio_lora = None if not audio_lora else dict(audio_lora)
        super().__init__(**kwargs)
        frontend.check_config(self)
        if frontend.keeps_asr_decoder(self) and self.audio_config.model_type not in ASR_DECODER_CLASSES:
            raise ValueError(
                f"keep_asr_decoder needs an encoder-decoder ASR model (Whisper); the audio encoder is {self.audio_config.model_type!r}."
            )

    # ---- derived facts ---------------------------------------------------------------------------
    @property
    def encoder_frontend(self) -> str:
        return ENCODER_FRONTENDS[self.audio_config.model_type]

    @property
    def encoder_hidden_size(self) -> int:
        return self.audio_config.hidden_size

    def audio_layout(self) -> AudioLayout:
        """The sample -> frame -> embedding arithmetic of this model (see :class:`AudioLayout`)."""
        sr = self.sampling_rate
        if self.encoder_frontend == "mel":
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
            frontend=self.encoder_frontend,
            mel_hop_length=self.mel_hop_length,
            convs=convs,
            samples_per_frame=samples_per_frame,
            downsample=self.downsample,
            pool_kernel=self.pool_kernel,
            pool_stride=self.pool_stride,
            stack_factor=self.stack_factor,
            tokens_per_second=self.audio_tokens_per_second,
            queries_per_window=self.qformer_queries,
            pad_windows=frontend_class(self.downsample).pad_windows,
        )


__all__ = ["AudioMiniChatConfig", "AudioLayout", "DEFAULT_AUDIO_TOKEN"]
