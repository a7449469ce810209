"""What every audio front end's options class is: its sub-config (``config.frontend_config``), pure Python.

A front end lives in two flat files at the root (transformers' remote-code loader ships no subfolders):
``frontend_<name>_config.py``, its options class (fields with defaults, checks, and the ``num_embeddings`` arithmetic
that decides how many ``<|audio|>`` placeholders a clip gets), which imports neither torch nor any modeling code,
so that loading a config or a processor never pulls in an encoder; and ``frontend_<name>.py``, the ``nn.Module``
that hears. The configuration registers the options classes (``FRONTEND_CONFIGS``), the model the modules
(``frontends.py``).
"""

from __future__ import annotations

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


__all__ = ["ASR_DECODER_TYPES", "FramesConfig", "FrontEndConfig", "positive_int"]
