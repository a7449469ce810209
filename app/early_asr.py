"""The cascade's ASR started before torch and transformers are imported (issue 26): for ``--mode cascade`` on the CPU
in one process, where an earlier run wrote the checkpoint's CTranslate2 Whisper folder (inference.ct2_asr), the
first file is transcribed in a thread while the command line imports and loads the model; the cascade then takes
that transcript (``asr_wait_s`` in ``--json``: how long it still waited). Imports nothing heavy."""

from __future__ import annotations

from .batch import available_cores, default_threads


def start_asr(args, mode, files, procs, log, prompt, max_new_tokens):
    """``--mode cascade`` on the CPU in one process: where an earlier run wrote the checkpoint's CTranslate2 Whisper
    (inference.ct2_asr.cached_folder), it starts transcribing the first file now, in a thread, before torch and
    transformers are imported and the model is loaded (about 10 s on 2 cores, beside it); the cascade then takes
    that transcript instead of making it. Returns the Ct2Whisper, or None: where anything is missing or odd, the
    usual path runs (and reports what is wrong)."""
    if mode != "cascade" or procs is not None or args.device not in (None, "cpu") or not files or files[0] is None:
        return None
    from ..utils.io import build_dir

    if log is not None and log.is_done(files[0], mode, prompt, str(args.model or build_dir()), max_new_tokens):
        return None
    try:
        from ..audio_io import load_audio
        from ..inference.ct2_asr import REFERENCE_COMPUTE_TYPE, Ct2Whisper, cached_folder, fast_compute_type

        folder = cached_folder(args.model or build_dir())
        if folder is None:
            return None
        # the threads asked for, less the core this thread needs meanwhile to import torch and load (measured on 2
        # cores, --threads 2: the ASR on 2 threads beside the import took 13.1 s, on 1 thread 8-9 s); all of them
        # where the llama.cpp route will answer (app/llm_route.py: no torch to import)
        threads = args.threads or default_threads()
        light = _light_route_likely(args)  # (its Whisper runs in the compute type that route reads)
        asr = Ct2Whisper(folder, threads=threads if light else max(1, min(threads, available_cores() - 1)),
                         compute_type=fast_compute_type() if light else REFERENCE_COMPUTE_TYPE)
        asr.prefetch(load_audio(files[0], None, asr.settings["sampling_rate"]))
        return asr
    except Exception:  # noqa: BLE001 - an unreadable file, a missing package, ...: the usual path says what
        return None


def _light_route_likely(args) -> bool:
    """Whether the llama.cpp route (app/llm_route.py) is likely to answer: asked for or auto, llama-cpp-python installed
    (a cheap look; the route itself checks the rest)."""
    import importlib.util

    return getattr(args, "llm_backend", "transformers") != "transformers" and importlib.util.find_spec("llama_cpp") is not None


def same_checkpoint(asr, model_dir):
    """``asr`` (from :func:`start_asr`) where its folder is still ``model_dir``'s (the checkpoint's files unchanged
    since, e.g. not rebuilt on the way); else None, its work stopped."""
    if asr is None:
        return None
    from ..inference.ct2_asr import cached_folder

    if cached_folder(model_dir) == asr.folder:
        return asr
    asr.stop_prefetch()
    return None
