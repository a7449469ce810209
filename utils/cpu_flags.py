"""The processor's feature flags as the kernel reports them, without torch (read by utils.cpu_features, which adds
PyTorch's own detection, and by the torch-free route's choices: inference.ct2_asr.fast_compute_type)."""

from __future__ import annotations


def reported_cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """``flags`` (x86) or ``Features`` (Arm) of the first processor in ``cpuinfo``; empty where it cannot be read."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


# Set, these make CTranslate2 run another CPU family's kernels on this one (CT2_USE_MKL=0: what it runs on AMD, oneDNN;
# the two caps keep oneDNN and MKL off instructions another CPU lacks): benchmarks record them beside their figures
# (scripts/whisper_compute_types.py says how they stand in for AMD).
BACKEND_ENV = ("CT2_USE_MKL", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def backend_env(environ=None) -> dict[str, str]:
    """Those of BACKEND_ENV set in ``environ`` (default: this process's environment)."""
    import os

    environ = os.environ if environ is None else environ
    return {k: environ[k] for k in BACKEND_ENV if k in environ}


__all__ = ["reported_cpu_flags", "BACKEND_ENV", "backend_env"]
