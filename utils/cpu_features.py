"""How the LLM's weights are held for inference: the one place that decides it (``dtype="auto"``), from what the
processor reports at run time, and the one function that applies it.

The choice (:func:`choose_llm_plan`): on a CPU whose PyTorch has the FBGEMM engine and that reports AVX2, the LLM's
linear layers keep fp16 copies of their weights, packed once at load, and multiply in fp32 (PyTorch's dynamic fp16
linear); everything else (embeddings, norms, attention, the audio front end) stays fp32. Elsewhere (a GPU, a CPU
without them): plain fp32, as before. With several threads too: FBGEMM's fp16 linear runs on one thread, but fp32's
multi-threaded layers gain nothing on a model this small (measured, 2 threads, 100 new tokens after the 2-minute
example's 387-token prompt, idle 2-core AMD EPYC: fp32 8.5 s, fp16 weights 3.6-3.8 s, the same tokens; one thread
with fp16 weights 4.3 s).

Measured on a 2-core AMD EPYC (AVX512, avx512_bf16, no AMX), SmolLM2-135M (the offline default), 128 new tokens
after a 396-token prompt, 1 thread (docs/recordings.md, "LLM weights"):

- fp16 weights: each new token 1.8x as fast as fp32 (the linear layers read about half the bytes), the prompt
  about as fast; logits within fp16 rounding of fp32, the same greedy answers (16 of 16);
- bfloat16 (the whole model): the prompt 1.8x faster, new tokens no faster, 13 of 16 answers changed;
- int8 dynamic quantisation (``torch.ao.quantization.quantize_dynamic``, qint8): 2.5x faster, but the answers are
  broken (per-tensor activation scales: every layer type alone changes the answer, all together give nonsense).
  Not offered.
- Intel AMX (``amx_bf16``) was not measured: there bf16 matrix products may win; the rule does not guess.
"""

from __future__ import annotations

import ctypes
import sys
import warnings
from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from .cpu_flags import reported_cpu_flags

FP16_WEIGHTS = "fp16-weights"  # the LLM's linear layers hold fp16 weights and compute in fp32
LLM_QUANTIZATIONS = (None, FP16_WEIGHTS)
# What PyTorch's dynamic fp16 linear needs: FBGEMM (x86) and a processor with AVX2 (FBGEMM's fp16 kernels; every
# AVX2 processor also has F16C, the fp16 conversions).
FP16_WEIGHT_ENGINES = ("fbgemm", "x86")
FP16_WEIGHT_FLAGS = frozenset({"avx2"})


@dataclass(frozen=True)
class LlmPlan:
    """How the model is loaded: ``dtype`` for every weight, and ``quantization`` (one of LLM_QUANTIZATIONS) for the
    LLM's linear layers; ``reason`` says why, in words."""

    dtype: torch.dtype
    quantization: str | None
    reason: str


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The processor's feature flags as the kernel lists them (utils.cpu_flags.reported_cpu_flags: ``avx2``,
    ``avx512f``, ``avx512_bf16``, ``amx_bf16``, ...), plus what PyTorch's own detection reports (``avx2`` under its AVX2
    or AVX512 capability), so a system without /proc/cpuinfo still says what PyTorch found. Empty if neither says
    anything."""
    flags = set(reported_cpu_flags(cpuinfo))
    capability = torch.backends.cpu.get_cpu_capability()  # "DEFAULT", "AVX2", "AVX512", "ZVECTOR", "SVE256", ...
    if capability in ("AVX2", "AVX512"):
        flags.add("avx2")
    return frozenset(flags)


def choose_llm_plan(device_type: str, flags: Iterable[str], engines: Iterable[str]) -> LlmPlan:
    """``dtype="auto"``: the plan for a model on ``device_type`` ("cpu", "cuda", ...), on a processor reporting
    ``flags`` (:func:`cpu_flags`) with PyTorch's quantized ``engines`` (``torch.backends.quantized.supported_engines``).
    Pure: decided from the arguments only."""
    if device_type != "cpu":
        return LlmPlan(torch.float32, None, f"on {device_type}: float32 (the CPU rule does not apply)")
    flags, engines = set(flags), set(engines)
    engine = next((e for e in FP16_WEIGHT_ENGINES if e in engines), None)
    missing = sorted(FP16_WEIGHT_FLAGS - flags)
    if engine is None or missing:
        why = (f"PyTorch has no {' / '.join(FP16_WEIGHT_ENGINES)} quantized engine" if engine is None
               else f"the processor does not report {', '.join(missing)}")
        return LlmPlan(torch.float32, None, f"CPU: float32 ({why})")
    return LlmPlan(torch.float32, FP16_WEIGHTS,
                   f"CPU with {', '.join(sorted(FP16_WEIGHT_FLAGS))} and PyTorch's {engine} engine: the LLM's "
                   "linear layers hold fp16 weights (fp32 arithmetic), the rest float32")


def llm_plan(dtype: str | torch.dtype, device_type: str) -> LlmPlan:
    """The plan for ``dtype``: "auto" is :func:`choose_llm_plan` on this processor; a dtype name is that dtype with no
    quantization."""
    if isinstance(dtype, str) and dtype == "auto":
        return choose_llm_plan(device_type, cpu_flags(), _fp16_linear_engines())
    from .dtypes import parse_dtype

    return LlmPlan(parse_dtype(dtype), None, "as asked")


def _fp16_linear_engines() -> list[str]:
    """PyTorch's quantized engines, or none where its dynamic linear module is gone (torch.ao's eager quantization is
    deprecated in favour of torchao: a PyTorch without it gets float32, not an error at load)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torch.ao.nn.quantized.dynamic import Linear  # noqa: F401
    except ImportError:
        return []
    return list(torch.backends.quantized.supported_engines)


# ---- applying it -------------------------------------------------------------------------------------------------
def fp16_weight_linears(module: nn.Module, release_pages: bool = True) -> int:
    """Replace each ``nn.Linear`` of ``module`` (fp32) by PyTorch's dynamic fp16 linear: its weight packed once as
    fp16, its input and output fp32. Layers with forward hooks (an adapter's) stay as they are. Returns how many were
    replaced. (FBGEMM pads a layer's input size to a multiple of 512 when packing: SmolLM2-135M's 576-wide layers take
    1.8x their fp16 size, the model's linear layers 437 MB against 540 MB in fp32.)

    ``release_pages``: a weight that is read from a memory-mapped checkpoint (transformers maps safetensors files) has
    its pages, which packing just read, handed back to the system (:func:`release_file_pages`), layer by layer, so the
    fp32 copies neither stay resident beside the packed ones nor raise the peak (tied weights included: a page read
    again, e.g. an embedding row, comes back from the file). Call it right after loading, before anything writes to
    the weights."""
    with warnings.catch_warnings():  # torch.ao.quantization's notice that its eager API moves to torchao
        warnings.simplefilter("ignore")
        from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
        from torch.ao.quantization import float16_dynamic_qconfig

    if torch.backends.quantized.engine not in FP16_WEIGHT_ENGINES:
        raise ValueError(f"fp16 weights need PyTorch's {' or '.join(FP16_WEIGHT_ENGINES)} quantized engine, "
                         f"not {torch.backends.quantized.engine!r}")
    maps = _file_mappings() if release_pages else []
    layers = [(name, layer) for name, layer in module.named_modules()
              if type(layer) is nn.Linear and not layer._forward_hooks and not layer._forward_pre_hooks]
    for name, layer in layers:  # all checked before any is replaced
        if layer.weight.dtype != torch.float32 or layer.weight.device.type != "cpu":
            raise ValueError(f"fp16 weights are packed from float32 CPU layers; {name} is {layer.weight.dtype} on "
                             f"{layer.weight.device}")
    # the largest first (the output head): the pages read for a layer are released before the next, so the peak is
    # the packed total plus one layer, not plus the largest on top of all the others
    layers.sort(key=lambda item: item[1].weight.numel(), reverse=True)
    count = 0
    for name, layer in layers:
        layer.qconfig = float16_dynamic_qconfig
        with warnings.catch_warnings():  # torch.ao.quantization's notice that its eager API moves to torchao
            warnings.simplefilter("ignore")
            packed = DynamicLinear.from_float(layer)
        parent, _, attr = name.rpartition(".")
        setattr(module.get_submodule(parent) if parent else module, attr, packed)
        if maps:
            release_file_pages(layer.weight, maps)
        count += 1
    return count


def _file_mappings() -> list[tuple[int, int]]:
    """(start, end) of this process's private mappings of safetensors files (Linux: /proc/self/maps); [] elsewhere."""
    if not sys.platform.startswith("linux"):
        return []
    spans = []
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                parts = line.split(maxsplit=5)
                if len(parts) == 6 and parts[5].strip().endswith(".safetensors") and parts[1].endswith("p"):
                    start, end = (int(x, 16) for x in parts[0].split("-"))
                    spans.append((start, end))
    except OSError:
        return []
    return spans


def release_file_pages(tensor: torch.Tensor, maps: list[tuple[int, int]]) -> int:
    """Hand back the whole pages of ``tensor``'s storage if it lies in one of ``maps`` (private mappings of
    checkpoint files: :func:`_file_mappings`), with ``madvise(MADV_DONTNEED)``: the pages leave this process's
    resident memory and, read again, come back from the file unchanged (the mapping is private and nothing has
    written to it). Returns the bytes released (0: not in a mapped file, or not Linux)."""
    storage = tensor.untyped_storage()
    start, size = storage.data_ptr(), storage.nbytes()
    if not any(lo <= start and start + size <= hi for lo, hi in maps):
        return 0
    page = _page_size()
    first, last = -(-start // page) * page, (start + size) // page * page  # whole pages inside the storage only
    if last <= first:
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    madv_dontneed = 4
    if libc.madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), madv_dontneed) != 0:
        return 0
    return last - first


def _page_size() -> int:
    import resource

    return resource.getpagesize()


__all__ = ["FP16_WEIGHTS", "LLM_QUANTIZATIONS", "LlmPlan", "cpu_flags", "choose_llm_plan", "llm_plan",
           "fp16_weight_linears", "release_file_pages"]
