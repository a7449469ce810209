"""`datasets` audio columns without torchcodec: 16 kHz PCM16 WAV bytes in an ``Audio`` feature.

``datasets`` 5.x needs torchcodec (and FFmpeg) to *encode* or *decode* audio itself. The project stores
WAV bytes directly in the Arrow column (``{"bytes", "path"}``, the ``Audio`` storage format) and decodes
them with soundfile, so datasets written here load anywhere and still declare ``Audio(sampling_rate=16000)``.
"""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf
from datasets import Audio, Dataset, Features


def encode_wav(array: np.ndarray, sampling_rate: int = 16000) -> dict:
    """A float waveform -> ``{"bytes": WAV PCM16, "path": None}``."""
    buf = io.BytesIO()
    sf.write(buf, np.asarray(array, dtype=np.float32), sampling_rate, format="WAV", subtype="PCM_16")
    return {"bytes": buf.getvalue(), "path": None}


def audio_dataset(columns: dict, audio_column: str = "audio", sampling_rate: int = 16000) -> Dataset:
    """A Dataset from column lists whose ``audio_column`` holds ``encode_wav`` dicts, typed ``Audio(sampling_rate)``."""
    ds = Dataset.from_dict(columns)
    features = Features({**ds.features, audio_column: Audio(sampling_rate=sampling_rate, decode=False)})
    ds = ds.cast(features)
    return ds.cast_column(audio_column, Audio(sampling_rate=sampling_rate))


__all__ = ["encode_wav", "audio_dataset"]
