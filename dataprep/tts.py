"""Offline text-to-speech front end used to synthesise paired speech + text.

Every engine is a local program or package (see ``scripts/install_system_deps.sh``);
nothing is fetched at run time.  :func:`synthesize` always returns float32 mono audio
at 16 kHz (``torchaudio.functional.resample`` from the engine's native rate).

Engines and voices
------------------
========== ============================================== ============ ================
engine     voices                                         native rate  used for
========== ============================================== ============ ================
espeak-ng  8 English accents x 75 variants (+m1, +f3 ..)   22.05 kHz    training, eval
           x rate / pitch
flite      kal, kal16, slt, rms, awb                       8 / 16 kHz   training
festival   kal_diphone, ked_diphone, cmu_us_slt_arctic_hts 16 / 32 kHz  training
piper      joe (en_US-joe-medium, neural)                  22.05 kHz    evaluation only
========== ============================================== ============ ================

The piper ``joe`` voice is reserved for evaluation (``eval_only=True``): it is never
returned by :func:`training_voices`, so evaluation hears a voice the model never heard.

Measured real-time factor (synthesis time / audio duration; lower is faster) on the
project's 2-core CPU machine: one 53-word paragraph (17-19 s of speech), mean of 3 runs
after a warm-up, including process start-up, wav reading and resampling to 16 kHz
(``python -m audio_minichat.dataprep.tts --benchmark``).  The machine is shared, so two runs are
shown: a quiet one and one under a load average of ~2.7 from other jobs.

================================= ======= ========
voice                             quiet   loaded
================================= ======= ========
espeak-ng en-us                   0.0015  0.0048
espeak-ng en-gb-scotland+klatt    0.0015  0.0091
flite kal16                       0.0009  0.0027
flite slt                         0.0099  0.0154
festival kal_diphone              0.0121  0.0183
festival ked_diphone              0.0120  0.0253
festival cmu_us_slt_arctic_hts    0.042   0.076
piper joe (model already loaded)  0.024   0.093
================================= ======= ========

(piper's first call also loads the 63 MB ONNX model: about 1 s.)

The voices (:class:`Voice`, the training and evaluation sets) live in :mod:`.voices`, the engines in
:mod:`.tts_engines`; the public names are importable from here.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import soundfile as sf

from .tts_engines import _SYNTH, TTSError, engine_available
from .voices import (
    _ENGINES,
    ESPEAK_ACCENTS,
    ESPEAK_VARIANTS,
    FESTIVAL_VOICES,
    FLITE_VOICES,
    TRAINING_ENGINES,
    Voice,
    check_training_voice,
    evaluation_voices,
    training_voices,
)


__all__ = [
    "TARGET_SAMPLE_RATE",
    "TTSError",
    "Voice",
    "ESPEAK_ACCENTS",
    "ESPEAK_VARIANTS",
    "FLITE_VOICES",
    "FESTIVAL_VOICES",
    "TRAINING_ENGINES",
    "synthesize",
    "training_voices",
    "evaluation_voices",
    "check_training_voice",
    "engine_available",
    "write_wav",
]

TARGET_SAMPLE_RATE = 16_000


def _resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    if orig_sr == target_sr:
        return audio.astype(np.float32, copy=False)
    import torch
    import torchaudio.functional as AF

    with torch.no_grad():
        y = AF.resample(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)), orig_sr, target_sr)
    return y.numpy().astype(np.float32, copy=False)


def synthesize(
    text: str,
    voice: Voice,
    *,
    sample_rate: int = TARGET_SAMPLE_RATE,
    peak: Optional[float] = 0.9,
) -> np.ndarray:
    """Speak ``text`` with ``voice``; return float32 mono audio at ``sample_rate`` (16 kHz).

    ``peak``: scale so that max |x| == peak (None keeps the engine's level).
    Raises :class:`TTSError` when the engine is missing, fails, or yields empty/silent audio.
    Text reaches the engines through stdin or a temporary file, never a shell.
    """
    if not isinstance(voice, Voice):
        raise TypeError(f"voice must be a Voice, got {type(voice).__name__}")
    clean = " ".join(str(text).split())
    if not clean or not any(ch.isalnum() for ch in clean):
        raise TTSError("nothing to say (empty text)", voice=voice, text=str(text))
    with tempfile.TemporaryDirectory(prefix="amc_tts_") as d:
        audio, sr = _SYNTH[voice.engine](clean, voice, Path(d))
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    if audio.size == 0:
        raise TTSError("engine produced empty audio", voice=voice, text=clean)
    if not np.all(np.isfinite(audio)):
        raise TTSError("engine produced non-finite samples", voice=voice, text=clean)
    audio = _resample(audio, sr, sample_rate)
    top = float(np.max(np.abs(audio))) if audio.size else 0.0
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0
    if audio.size < sample_rate // 20 or top < 1e-3 or rms < 1e-4:
        raise TTSError(
            f"engine produced silent or near-empty audio ({audio.size} samples, peak {top:.2e})",
            voice=voice,
            text=clean,
        )
    if peak is not None:
        audio = audio * np.float32(peak / top)
    return audio.astype(np.float32, copy=False)


def write_wav(path: "str | os.PathLike", audio: np.ndarray, sample_rate: int = TARGET_SAMPLE_RATE) -> None:
    """Write mono float audio as 16-bit PCM wav."""
    sf.write(str(path), np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0), sample_rate, subtype="PCM_16")


# --------------------------------------------------------------------------- CLI

_BENCH_TEXT = (
    "The committee met on Tuesday morning to review the plans for the new library. "
    "After a long discussion, members agreed that the building should open next spring, "
    "provided that the contractors finish the roof before the first snow. Several residents "
    "asked whether the reading rooms would stay open late during the exam season."
)


def _benchmark(voices: Iterable[Voice], repeats: int = 3) -> list[tuple[str, float, float]]:
    rows = []
    for v in voices:
        if not engine_available(v.engine):
            print(f"{v.id}: engine not installed, skipped")
            continue
        synthesize(_BENCH_TEXT, v)  # warm-up (piper model load, page cache)
        t0 = time.perf_counter()
        for _ in range(repeats):
            audio = synthesize(_BENCH_TEXT, v)
        dt = (time.perf_counter() - t0) / repeats
        dur = audio.size / TARGET_SAMPLE_RATE
        rows.append((v.id, dur, dt / dur))
        print(f"{v.id:50s} audio {dur:6.2f} s  rtf {dt / dur:.4f}")
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description="Synthesise text with an offline TTS voice (16 kHz mono wav).")
    p.add_argument("--text", help="text to speak (default: read --text-file)")
    p.add_argument("--text-file", help="file with the text to speak")
    p.add_argument("--out", help="output wav path")
    p.add_argument("--engine", default="espeak-ng", choices=_ENGINES)
    p.add_argument("--voice", default="en-us", help="engine voice name")
    p.add_argument("--variant", default=None, help="espeak-ng variant, e.g. m3")
    p.add_argument("--rate", type=float, default=1.0)
    p.add_argument("--pitch", type=int, default=None)
    p.add_argument("--list-training-voices", type=int, metavar="N", help="print N training voices (with --seed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--benchmark", action="store_true", help="measure the real-time factor of each engine")
    args = p.parse_args(argv)

    if args.benchmark:
        _benchmark([
            Voice("espeak-ng", "en-us"),
            Voice("espeak-ng", "en-gb-scotland", variant="klatt"),
            Voice("flite", "kal16"),
            Voice("flite", "slt"),
            Voice("festival", "kal_diphone"),
            Voice("festival", "ked_diphone"),
            Voice("festival", "cmu_us_slt_arctic_hts"),
            Voice("piper", "joe", eval_only=True),
        ])
        return 0
    if args.list_training_voices is not None:
        for v in training_voices(args.seed, args.list_training_voices):
            print(v.id)
        return 0
    if args.text is None and args.text_file is None:
        p.error("give --text or --text-file")
    if args.out is None:
        p.error("give --out")
    text = args.text if args.text is not None else Path(args.text_file).read_text(encoding="utf-8")
    voice = Voice(args.engine, args.voice, variant=args.variant, rate=args.rate, pitch=args.pitch,
                  eval_only=args.engine == "piper")
    audio = synthesize(text, voice)
    write_wav(args.out, audio)
    print(f"{args.out}: {audio.size / TARGET_SAMPLE_RATE:.2f} s, voice {voice.id}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
