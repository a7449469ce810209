"""Which runtime answers a command line's files (issue 26, ``--llm-backend``): ``SpeechLLM`` (torch and transformers:
every mode, the reference) or ``GgufSpeechLLM`` (CTranslate2 + llama.cpp, inference/gguf_cascade.py: the cascade, the
text mode and the soft cascade's e2e on the CPU, torch never imported). ``auto`` takes the second wherever it can run: llama-cpp-python is
installed (extra ``fast``), the checkpoint's LLM came from a GGUF file that is on this machine, its CTranslate2 Whisper
folder is written (the cascade's first run writes it) and the command needs nothing else (summarize / ask, one
process, no --dtype other than auto)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from .choices import LLM_BACKENDS

_, BACKEND, REFERENCE = LLM_BACKENDS  # (inference/gguf_llm.py's; imported when a route loads)

@dataclass
class Route:
    llm: object  # SpeechLLM or GgufSpeechLLM
    model_dir: str
    load_s: float
    threads: int
    backend: str  # BACKEND or REFERENCE
    restore: Callable[[], None]  # the process's own thread settings back (a caller in this process keeps its own)

    def fields(self) -> dict:
        """What ``--json`` says of the runtime: threads, dtype, llm_quantization, llm_backend, asr_compute_type (the
        CTranslate2 Whisper's, where one transcribes: it changes transcripts)."""
        if self.backend == BACKEND:
            return {"threads": self.threads, "dtype": None, "llm_quantization": self.llm.llm_quantization,
                    "llm_backend": BACKEND, "asr_compute_type": self.llm.asr_compute_type}
        from ..utils.dtypes import dtype_name

        return {"threads": self.threads, "dtype": dtype_name(self.llm.dtype), "llm_quantization": self.llm.llm_quantization,
                "llm_backend": REFERENCE, "asr_compute_type": self.llm.asr_compute_type}


def quiet_transformers() -> None:
    """transformers' own logging down to errors, no per-tensor progress bars (the command line's step messages report
    progress); called by the commands that load models, after the arguments are parsed."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def light_model_dir(args) -> str | None:
    """``--model``, or the offline default where it is built and current; None where building is needed (torch)."""
    if args.model:
        return args.model
    from ..assets.builds import cached_build

    found = cached_build()
    return None if found is None else str(found)


def why_not_light(args, mode: str | None, procs) -> str | None:
    """Why the llama.cpp route cannot answer this command line (one line), or None."""
    if args.command not in ("summarize", "ask"):
        return f"{args.command} runs on transformers"
    if args.dtype not in (None, "auto"):
        return f"--dtype {args.dtype} sets transformers' weights"
    model_dir = light_model_dir(args)
    if model_dir is None:
        return "the offline default is not built yet"
    from ..inference.gguf_cascade import unavailable

    return unavailable(model_dir, mode, args.device)


def load(args, mode: str | None, procs, early_asr, build_default: Callable[[], str], check_model_dir, step, error) -> Route:
    """The route for this command line (``args.llm_backend``), loaded; ``error(message)``: the CLI's one-line error."""
    from .batch import default_threads

    choice = getattr(args, "llm_backend", REFERENCE)
    if choice not in LLM_BACKENDS:
        raise error(f"--llm-backend must be one of {', '.join(LLM_BACKENDS)}")
    why = why_not_light(args, mode, procs) if choice != REFERENCE else "asked for"
    if choice == BACKEND and why is not None:
        raise error(f"--llm-backend {BACKEND}: {why}")
    threads = args.threads or default_threads()
    if why is None:
        from ..inference.gguf_cascade import GgufSpeechLLM

        model_dir = light_model_dir(args)
        check_model_dir(model_dir)
        t0 = step("loading model (llama.cpp)...", args.quiet)
        asr = early_asr if early_asr is not None and early_asr.folder is not None else None
        llm = GgufSpeechLLM(model_dir, threads=threads, check_speech=not args.no_speech_check, ct2_asr=asr)
        return Route(llm, model_dir, time.perf_counter() - t0, threads, BACKEND, lambda: None)
    from .batch import set_threads

    quiet_transformers()
    from ..inference.speech_llm import SpeechLLM, resolve_device

    resolve_device(args.device)  # before any model is built or loaded
    import torch

    from .early_asr import same_checkpoint

    previous = torch.get_num_threads()
    threads = set_threads(threads)  # before the model runs
    t0 = step("loading model...", args.quiet)
    model_dir = args.model or build_default()
    check_model_dir(model_dir)
    llm = SpeechLLM(model_dir, device=args.device, dtype=args.dtype, check_speech=not args.no_speech_check,
                    ct2_asr=same_checkpoint(early_asr, model_dir))
    return Route(llm, str(model_dir), time.perf_counter() - t0, threads, REFERENCE, lambda: set_threads(previous))


__all__ = ["Route", "load", "why_not_light", "light_model_dir", "quiet_transformers"]
