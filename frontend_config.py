"""What every audio front end's options class is: its sub-config (``config.frontend_config``), pure Python.

A front end lives in two flat files at the root (transformers' remote-code loader ships no subfolders):
``frontend_<name>_config.py``, its options class (fields with defaults, checks, and the ``num_embeddings`` arithmetic
that decides how many ``<|audio|>`` placeholders a clip gets), which imports neither torch nor any modeling code,
so that loading a config or a processor never pulls in an encoder; and ``frontend_<name>.py``, the ``nn.Module``
that hears. The configuration registers the options classes (``FRONTEND_CONFIGS``), the model the modules
(``frontends.py``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import ClassVar

# Encoder families (``audio_config.model_type``) that come with an ASR decoder (encoder-decoder ASR models). A fact
# about architectures by name; frontend_base.py holds the classes.
ASR_DECODER_TYPES = ("whisper",)


@dataclass(frozen=True)
class FrontEndConfig:
    """One front end's options. Subclasses set ``name`` (the ``config.audio_frontend`` value that picks them), declare
    their options as dataclass fields and implement :meth:`num_embeddings`."""

    name: ClassVar[str] = ""
    pad_windows: ClassVar[bool] = False  # the processor pads every window's features to the full window
    needs_spans: ClassVar[bool] = False  # the processor needs ``audio_spans`` for each clip
    reads_asr_decoder: ClassVar[bool] = False  # the front end reads the ASR decoder (so the checkpoint keeps it)
    # old name -> option, for names that files written before the sub-configs used (read by upgrade_legacy_keys)
    legacy_keys: ClassVar[dict[str, str]] = {}

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_dict(cls, options: dict | None) -> "FrontEndConfig":
        """The options from a ``frontend_config`` dict (missing ones take their defaults; unknown ones are refused)."""
        options = dict(options or {})
        unknown = sorted(set(options) - set(cls.option_names()))
        if unknown:
            raise ValueError(f"frontend_config of audio_frontend={cls.name!r}: unknown option(s) {unknown}; "
                             f"its options are {list(cls.option_names())}.")
        return cls(**options)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def check(self, config) -> None:
        """Raise ValueError when the model ``config`` (its encoder) cannot be served by this front end."""

    def num_embeddings(self, layout, num_samples: int, num_spans: int | None = None) -> int:
        """THE number of LLM embeddings (placeholder tokens) for a clip of ``num_samples`` samples under ``layout``."""
        raise NotImplementedError

    @classmethod
    def from_asr_model(cls, asr_model) -> dict:
        """Options this front end reads from a pretrained ASR model (e.g. how it decodes); none by default."""
        return {}


@dataclass(frozen=True)
class FramesConfig(FrontEndConfig):
    """Front ends that downsample each clip's encoder frames (windows concatenated): the count is
    :meth:`downsampled_length` of the clip's frames."""

    def num_embeddings(self, layout, num_samples: int, num_spans: int | None = None) -> int:
        return self.downsampled_length(layout, layout.clip_frames(num_samples), num_spans)

    def downsampled_length(self, layout, frames: int, num_spans: int | None = None) -> int:
        raise NotImplementedError


def positive_int(owner: str, name: str, value) -> int:
    """``value`` as an int, or a ValueError naming the option when it is not a positive integer."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}.")
    return int(value)




@dataclass(frozen=True)
class AudioLayout:
    """Pure arithmetic from a clip's sample count to its encoder windows and frames (what every front end shares).

    A clip is split into ``ceil(n / window_samples)`` windows of nearly equal length (no tiny tail window), each
    window is encoded on its own, and the encoder frames of all windows of the clip are concatenated; the front end's
    options turn that into the clip's embedding count (``FrontEndConfig.num_embeddings``).
    """

    sampling_rate: int
    window_samples: int
    min_samples: int
    feature_kind: str  # "mel" (log-mel features) or "conv" (the raw waveform): ENCODER_FEATURE_KINDS
    mel_hop_length: int = 160
    convs: tuple = ()  # ((kernel, stride, padding), ...) applied after the mel features / to the waveform
    samples_per_frame: int = 320
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
        if self.feature_kind == "mel":
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

    def to_dict(self) -> dict:
        d = asdict(self)
        d["convs"] = [list(c) for c in self.convs]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "AudioLayout":
        d = dict(d)
        d["convs"] = tuple(tuple(c) for c in d.get("convs", ()))
        return cls(**d)


__all__ = ["ASR_DECODER_TYPES", "AudioLayout", "FramesConfig", "FrontEndConfig", "positive_int"]
