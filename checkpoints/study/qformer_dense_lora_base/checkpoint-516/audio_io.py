"""Reading audio files: libsndfile (through soundfile) for the formats it knows, a decoder for the others.

soundfile's libsndfile (1.1 or newer) reads WAV, FLAC, OGG (Vorbis and Opus), MP3, AIFF and CAF itself. The
formats of phones and meeting tools (M4A/AAC, MP4, WebM, WMA, AMR) need a decoder: PyAV (``pip install av``, its
wheels bundle FFmpeg's libraries; the ``audio`` extra of this package) or, where PyAV is not installed, the
``ffmpeg`` program on PATH (Debian: ``apt-get install ffmpeg``). A decoder decodes straight to mono at the target
rate, so an hour of 48 kHz stereo costs the memory of an hour of 16 kHz mono.

Core module: it imports only numpy, soundfile and (lazily) PyAV; :func:`read_audio_file` raises
:class:`AudioDecodeError` with a message that says what failed and what to install.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np

# What libsndfile reads itself, and what a decoder is needed for (names as they end, lower case).
SNDFILE_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".caf", ".au", ".w64", ".rf64")
DECODER_EXTENSIONS = (".m4a", ".aac", ".mp4", ".m4b", ".3gp", ".amr", ".webm", ".mka", ".mkv", ".wma", ".ac3")
AUDIO_EXTENSIONS = SNDFILE_EXTENSIONS + DECODER_EXTENSIONS
DECODER_HINT = "pip install av (the audio extra: pip install 'audio-minichat[audio]'), or apt-get install ffmpeg"


class AudioDecodeError(ValueError):
    """An audio file that could not be decoded (the message names what failed; the caller names the file)."""


def is_audio_file(path: str | os.PathLike) -> bool:
    """Whether the file's name ends as an audio file's does (the formats this module reads)."""
    return os.fspath(path).lower().endswith(AUDIO_EXTENSIONS)


def _decode_pyav(path: str, rate: int) -> np.ndarray:
    import av

    chunks = []
    with av.open(path) as container:
        if not container.streams.audio:
            raise AudioDecodeError("it holds no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        for frame in container.decode(stream):
            chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(frame)]
        chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]  # what the resampler holds back
    return np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)


def _decode_ffmpeg(path: str, rate: int) -> np.ndarray:
    done = subprocess.run(
        [shutil.which("ffmpeg") or "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-i", path, "-vn",
         "-f", "f32le", "-ac", "1", "-ar", str(int(rate)), "pipe:1"],
        capture_output=True, check=False,
    )
    if done.returncode != 0:
        raise AudioDecodeError(" ".join(done.stderr.decode("utf-8", "replace").split())[-300:] or f"exit status {done.returncode}")
    return np.frombuffer(done.stdout, dtype="<f4").astype(np.float32)


def available_decoder():
    """``(name, decode(path, rate) -> mono float32)`` of the decoder this machine has (PyAV first, then the ffmpeg
    program), or None."""
    try:
        import av  # noqa: F401
    except ImportError:
        pass
    else:
        return "PyAV", _decode_pyav
    if shutil.which("ffmpeg"):
        return "ffmpeg", _decode_ffmpeg
    return None


def read_audio_file(path: str | os.PathLike, target_rate: int = 16000) -> tuple[np.ndarray, int]:
    """``(samples, rate)`` of an audio file: ``(frames, channels)`` float32 at the file's rate from soundfile, or,
    for what libsndfile cannot read, ``(frames,)`` mono at ``target_rate`` from the decoder."""
    import soundfile as sf

    path = os.fspath(path)
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
        return data, int(rate)
    except Exception as exc:  # soundfile raises several types for what it cannot read
        sndfile_error = " ".join(str(exc).split())
    decoder = available_decoder()
    if decoder is None:
        if path.lower().endswith(SNDFILE_EXTENSIONS):
            raise AudioDecodeError(sndfile_error)
        kind = os.path.splitext(path)[1].lstrip(".").upper() or "this"
        raise AudioDecodeError(f"{kind} audio needs a decoder and none is installed: {DECODER_HINT} "
                               f"(libsndfile {getattr(sf, '__libsndfile_version__', '?')}: {sndfile_error})")
    name, decode = decoder
    try:
        return decode(path, int(target_rate)), int(target_rate)
    except Exception as exc:
        raise AudioDecodeError(f"soundfile: {sndfile_error}; {name}: {' '.join(str(exc).split())}") from None


__all__ = ["AUDIO_EXTENSIONS", "SNDFILE_EXTENSIONS", "DECODER_EXTENSIONS", "DECODER_HINT", "AudioDecodeError",
           "available_decoder", "is_audio_file", "read_audio_file"]
