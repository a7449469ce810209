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


__all__ = ["reported_cpu_flags"]
