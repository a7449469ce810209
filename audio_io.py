"""Reading audio files: libsndfile (through soundfile) for the formats it knows, a decoder for the others.

soundfile's libsndfile (1.1 or newer) reads WAV, FLAC, OGG (Vorbis and Opus), MP3, AIFF and CAF itself. The
formats of phones and meeting tools (M4A/AAC, MP4, WebM, WMA, AMR) need a decoder: PyAV (``pip install av``, its
wheels bundle FFmpeg's libraries; the ``audio`` extra of this package) or, where PyAV is not installed, the
``ffmpeg`` program on PATH (Debian: ``apt-get install ffmpeg``). A decoder decodes straight to mono at the target
rate, so an hour of 48 kHz stereo costs the memory of an hour of 16 kHz mono.

Core module: it imports only numpy, soundfile and (lazily) PyAV and torch; :func:`read_audio_file` raises
:class:`AudioDecodeError` with a message that says what failed and what to install. :func:`load_audio` is the one
entry for every audio input (a path, an array or tensor, a ``datasets`` dict) the processor, the pipeline, the CLI and
training read: a finite float32 mono array at the target rate, or :class:`AudioInputError` naming the problem.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings

import numpy as np

# What libsndfile reads itself, and what a decoder is needed for (names as they end, lower case).
SNDFILE_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".caf", ".au", ".w64", ".rf64")
DECODER_EXTENSIONS = (".m4a", ".aac", ".mp4", ".m4b", ".3gp", ".amr", ".webm", ".mka", ".mkv", ".wma", ".ac3")
AUDIO_EXTENSIONS = SNDFILE_EXTENSIONS + DECODER_EXTENSIONS
DECODER_HINT = "pip install av (the audio extra: pip install 'audio-minichat[audio]'), or apt-get install ffmpeg"


# The lowest sample rate accepted (speech is recorded at 8000 Hz or more; a header that claims under this is broken).
MIN_SAMPLE_RATE = 1000


class AudioDecodeError(ValueError):
    """An audio file that could not be decoded (the message names what failed; the caller names the file)."""


def check_sample_rate(rate, name: str = "audio") -> int:
    """``rate`` as an int, or a ValueError naming ``name`` when it is not a usable sample rate (a number of at least
    MIN_SAMPLE_RATE Hz)."""
    try:
        value = float(rate)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: the sampling rate must be a number of Hz, got {rate!r}.") from None
    if not (MIN_SAMPLE_RATE <= value < float("inf")) or value != int(value):
        what = "must be > 0" if not value > 0 else f"must be a whole number of at least {MIN_SAMPLE_RATE} Hz"
        raise ValueError(f"{name}: a sampling rate of {rate!r} Hz is not usable: it {what} "
                         f"(speech is recorded at 8000 Hz or more).")
    return int(value)


# Is there speech? The energy part of the speech check (inference.speech_llm.SpeechLLM.check_speech adds Whisper's
# no-speech probability for a steady signal; the pipeline uses this part alone). RMS over 25 ms frames every 10 ms;
# a frame louder than the floor may be speech, and a clip needs MIN_SPEECH_SECONDS of such frames (a word is longer;
# 0.1 s is one short syllable). -55 dBFS is ~10 dB under quiet speech recorded at 1 % gain (its loud frames reach
# -49 dBFS) and above the hiss of a silent room recorded at normal gain (-60 dBFS).
FRAME_SECONDS, HOP_SECONDS = 0.025, 0.010
BLOCK_FRAMES = 1000  # frame_dbfs works through a clip 10 s at a time
ENERGY_FLOOR_DBFS = -55.0
MIN_SPEECH_SECONDS = 0.1


def frame_dbfs(clip: np.ndarray, rate: int = 16000) -> np.ndarray:
    """RMS level (dB re full scale) of each 25 ms frame every 10 ms; a clip shorter than a frame is one frame.
    Digital silence is -inf. Computed BLOCK_FRAMES frames at a time: an hour's clip costs a few MB, not float64
    copies of the whole (and each block's running sums stay exact to float64)."""
    frame, hop = int(FRAME_SECONDS * rate), int(HOP_SECONDS * rate)
    x = np.asarray(clip)
    if x.size < frame:
        x = np.pad(x.astype(np.float64), (0, frame - x.size))
    n = 1 + (x.size - frame) // hop
    rms = np.empty(n)
    for first in range(0, n, BLOCK_FRAMES):
        count = min(BLOCK_FRAMES, n - first)
        block = np.asarray(x[first * hop : (first + count - 1) * hop + frame], dtype=np.float64)
        squares = np.concatenate([[0.0], np.cumsum(block * block)])
        starts = hop * np.arange(count)
        rms[first : first + count] = np.sqrt(np.maximum(squares[starts + frame] - squares[starts], 0.0) / frame)
    with np.errstate(divide="ignore"):
        return 20 * np.log10(rms)


def energy_check(clip: np.ndarray, rate: int = 16000) -> tuple[str | None, np.ndarray]:
    """Why ``clip`` holds no speech by its energy alone (too short, digital silence, or too few frames over
    ENERGY_FLOOR_DBFS), or None when it may; and its frame levels (:func:`frame_dbfs`)."""
    levels = frame_dbfs(clip, rate)
    loudest = float(levels.max())
    active = float(np.sum(levels > ENERGY_FLOOR_DBFS) * HOP_SECONDS)
    seconds = len(clip) / rate
    if seconds < MIN_SPEECH_SECONDS:
        return f"{seconds:.2f} s long, under the {MIN_SPEECH_SECONDS} s of a short word", levels
    if not np.isfinite(loudest):
        return "digital silence: every sample is 0", levels
    if active < MIN_SPEECH_SECONDS:
        return f"silent: {active:.2f} s louder than {ENERGY_FLOOR_DBFS:.0f} dBFS, the loudest 25 ms at {loudest:.1f} dBFS", levels
    return None, levels


def wav_truncation(path: str | os.PathLike) -> str | None:
    """For a WAV file whose data is shorter than its header says (an interrupted copy or download): one line saying
    so (what the header claims, what the file holds); None for a complete WAV or any other file. Reads the RIFF
    chunk headers only."""
    import struct

    path = os.fspath(path)
    if not path.lower().endswith(".wav"):
        return None
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            byte_rate, offset = None, 12
            while offset + 8 <= size:
                fh.seek(offset)
                chunk, length = struct.unpack("<4sI", fh.read(8))
                if chunk == b"fmt ":
                    fmt = fh.read(16)
                    if len(fmt) == 16:
                        byte_rate = struct.unpack("<HHIIHH", fmt)[3]
                elif chunk == b"data":
                    there = size - offset - 8
                    if length in (0, 0xFFFFFFFF) or there >= length:  # (0 / all ones: a streamed WAV's placeholders)
                        return None
                    if byte_rate:
                        return (f"audio file {path!r} is cut short: its header says {length / byte_rate:.2f} s, the file "
                                f"holds {there / byte_rate:.2f} s (an interrupted copy?); answering what is there")
                    return (f"audio file {path!r} is cut short: its header says {length} bytes of audio, the file holds "
                            f"{there} (an interrupted copy?); answering what is there")
                offset += 8 + length + (length & 1)
    except (OSError, struct.error):
        return None
    return None


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


AUDIO_FILE_HINT = "expected WAV, FLAC, OGG/Opus or MP3, or M4A/AAC with PyAV or ffmpeg installed"


class AudioInputError(ValueError):
    """Audio that cannot be used (empty, not finite, unreadable, wrong shape, an unusable sampling rate)."""


class AudioTruncatedWarning(UserWarning):
    """A WAV file whose data is shorter than its header says: what is there is used."""


def _describe(source) -> str:
    return f"file {source!r}" if isinstance(source, (str, os.PathLike)) else "array"


def load_audio(audio, sampling_rate: int | None = None, target_rate: int = 16000, name: str = "audio") -> np.ndarray:
    """Return ``audio`` as a finite float32 mono array at ``target_rate``.

    Accepts a file path (read with soundfile, or PyAV / ffmpeg for M4A/AAC: :mod:`audio_io`), a float or integer numpy array / torch tensor (int16 is
    scaled by 1/32768, other ints by their range), mono or multi-channel (down-mixed by averaging),
    a ``{"array", "sampling_rate"}`` dict (the ``datasets`` Audio format), at any sample rate
    (resampled with torchaudio). Raises :class:`AudioInputError` naming the problem.
    """
    source = audio
    if isinstance(audio, dict):
        if "array" not in audio:
            raise AudioInputError(f"{name}: a dict audio input needs an 'array' key (and 'sampling_rate').")
        sampling_rate = audio.get("sampling_rate", sampling_rate)
        audio = audio["array"]
    if isinstance(audio, (str, os.PathLike)):
        path = os.fspath(audio)
        if not os.path.exists(path):
            raise AudioInputError(f"{name}: audio file {path!r} does not exist.")
        if os.path.isdir(path):
            raise AudioInputError(f"{name}: {path!r} is a directory, not an audio file ({AUDIO_FILE_HINT}).")
        try:
            audio, sampling_rate = read_audio_file(path, target_rate)
        except AudioDecodeError as exc:
            raise AudioInputError(f"{name}: cannot read audio file {path!r} ({AUDIO_FILE_HINT}): {exc}") from None
        cut = wav_truncation(path)
        if cut is not None:
            warnings.warn(cut, AudioTruncatedWarning, stacklevel=2)
    torch = sys.modules.get("torch")  # a tensor comes from a process that imported torch: no import here for a file
    if torch is not None and isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().numpy()
    if isinstance(audio, (list, tuple)):
        audio = np.asarray(audio)
    if not isinstance(audio, np.ndarray):
        raise AudioInputError(f"{name}: unsupported audio type {type(audio).__name__}; expected a path, array or tensor.")
    if sampling_rate is None:
        raise AudioInputError(f"{name}: an audio array needs its sampling_rate.")
    try:
        sampling_rate = check_sample_rate(sampling_rate, f"{name}: audio file {os.fspath(source)!r}"
                                          if isinstance(source, (str, os.PathLike)) else name)
    except ValueError as exc:
        raise AudioInputError(str(exc)) from None
    if audio.dtype.kind in "iu":
        info = np.iinfo(audio.dtype)
        scale = 32768.0 if audio.dtype == np.int16 else float(max(abs(info.min), info.max))
        offset = 0.0 if audio.dtype.kind == "i" else (info.max + 1) / 2
        audio = (audio.astype(np.float64) - offset) / scale
    elif audio.dtype.kind != "f":
        raise AudioInputError(f"{name}: audio dtype {audio.dtype} is not numeric.")
    if audio.size == 0 and audio.ndim <= 2:  # before the down-mix: the mean of no samples is NaN
        shape = "" if audio.ndim == 1 or isinstance(source, (str, os.PathLike)) else f", shape {audio.shape}"
        raise AudioInputError(f"{name}: the audio ({_describe(source)}) is empty (0 samples{shape}).")
    if audio.ndim == 2:
        # (samples, channels) as soundfile returns, or (channels, samples) as torchaudio does.
        channel_axis = 1 if audio.shape[1] <= audio.shape[0] else 0
        audio = audio.mean(axis=channel_axis)
    elif audio.ndim != 1:
        raise AudioInputError(f"{name}: audio must be 1-D (mono) or 2-D (multi-channel); got shape {audio.shape}.")
    if audio.size == 0:
        raise AudioInputError(f"{name}: the audio ({_describe(source)}) is empty (0 samples).")
    finite = np.isfinite(audio)
    if not finite.all():
        bad = int((~finite).sum())
        raise AudioInputError(
            f"{name}: the audio ({_describe(source)}) has {bad} of {audio.size} samples that are NaN or infinite."
        )
    audio = audio.astype(np.float32, copy=False)
    if int(sampling_rate) != target_rate:
        import torch
        import torchaudio.functional as AF

        audio = AF.resample(torch.from_numpy(np.ascontiguousarray(audio)), int(sampling_rate), target_rate).numpy()
    return np.ascontiguousarray(audio, dtype=np.float32)


__all__ = ["AUDIO_EXTENSIONS", "SNDFILE_EXTENSIONS", "DECODER_EXTENSIONS", "DECODER_HINT", "AudioDecodeError",
           "available_decoder", "is_audio_file", "read_audio_file", "MIN_SAMPLE_RATE", "check_sample_rate", "wav_truncation",
           "frame_dbfs", "energy_check", "FRAME_SECONDS", "HOP_SECONDS", "ENERGY_FLOOR_DBFS", "MIN_SPEECH_SECONDS",
           "AUDIO_FILE_HINT", "AudioInputError", "AudioTruncatedWarning", "load_audio"]
