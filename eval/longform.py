"""The benchmark's long-form case (``python -m audio_minichat.eval.benchmark --long-form N``).

N spoken XSum documents (the benchmark's selection, in order) are concatenated into one recording per voice with
PAUSE_SECONDS of quiet room between them, and their texts into one text (blank lines between). Each system
summarizes the whole through :func:`audio_minichat.inference.longform.summarize_long`, as ``audio-minichat
summarize`` does: a recording longer than one prompt (or than ``--long-form-segment-seconds``) is cut at pauses,
each segment summarized and the summaries combined; the text system cuts the concatenated text the same way, in
pieces of the same share of the whole (``segment_tokens`` = the segment seconds times the text's tokens per second
of the first voice's recording). Metrics: ROUGE-L of each audio system against the text system's output on the
same concatenation (modality invariance), ROUGE-1/2/L against the documents' human summaries joined in order,
chapters, latency, real-time factor and peak RSS. Outputs: ``longform.json`` and ``longform.md`` in ``--out-dir``.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import numpy as np

from ..utils.io import atomic_write, atomic_write_text

PAUSE_SECONDS = 1.0
PAUSE_NOISE = 0.0005  # a quiet room's hiss between the documents (-66 dBFS), not digital silence
LONG_FORM_PROMPT = "Summarize the following in a few sentences:"


def concatenate(paths: list[Path], out: Path, pause_seconds: float = PAUSE_SECONDS, seed: int = 0) -> float:
    """The wavs of ``paths`` (16 kHz mono) joined with pauses into ``out`` (PCM16, written atomically, one part at a
    time); returns its seconds."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    total = 0

    def write(tmp):
        nonlocal total
        with sf.SoundFile(str(tmp), "w", samplerate=16000, channels=1, subtype="PCM_16", format="WAV") as fh:
            for i, path in enumerate(paths):
                audio, rate = sf.read(str(path), dtype="float32")
                if rate != 16000:
                    raise ValueError(f"{path}: expected 16 kHz audio, got {rate} Hz")
                if i:
                    pause = (PAUSE_NOISE * rng.standard_normal(int(pause_seconds * 16000))).astype(np.float32)
                    fh.write(pause)
                    total += len(pause)
                fh.write(audio)
                total += len(audio)

    atomic_write(out, write, suffix=".wav")
    return total / 16000


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_long_form(args, docs: list[dict], synthesize, rouge, prompt: str | None = None) -> dict:
    """The long-form case over ``docs``; ``synthesize(docs, voice)`` caches their speech (the benchmark's
    manifests), ``rouge`` is the benchmark's ROUGE module."""
    import torch

    from ..inference.longform import summarize_long
    from ..inference.speech_llm import SpeechLLM

    prompt = prompt or LONG_FORM_PROMPT
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.model is None:
        from ..assets.default_build import build_default

        model_dir = Path(build_default())
    else:
        model_dir = Path(args.model)
    out_dir, cache_dir = Path(args.out_dir).expanduser(), Path(args.cache_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    audio_systems = [s for s in args.systems if s != "text"]
    voices = args.voices if audio_systems else []
    recordings = {}
    for voice in voices:
        manifest = synthesize(docs, voice)
        wav = cache_dir / voice / f"longform_{len(docs)}_{'_'.join(d['id'] for d in docs)[:80]}.wav"
        if not wav.exists():
            concatenate([cache_dir / voice / manifest["documents"][d["id"]]["file"] for d in docs], wav)
        recordings[voice] = wav
    text = "\n\n".join(d["document"].strip() for d in docs)
    reference = "\n".join(d["summary"].strip() for d in docs)
    llm = SpeechLLM(model_dir, device=device, dtype=args.dtype)
    segment_seconds = args.long_form_segment_seconds
    segment_tokens = None
    if segment_seconds is not None and recordings:
        import soundfile as sf

        first = sf.info(str(next(iter(recordings.values()))))
        tokens = len(llm.processor.tokenizer(text, add_special_tokens=False)["input_ids"])
        segment_tokens = max(1, round(segment_seconds * tokens / (first.frames / first.samplerate)))

    records = []
    for system in (["text"] if "text" in args.systems else []) + audio_systems:
        for voice in (["-"] if system == "text" else voices):
            start = time.perf_counter()
            answer = summarize_long(
                llm, system, audio=None if system == "text" else str(recordings[voice]),
                content=text if system == "text" else None, prompt=prompt, max_new_tokens=args.max_new_tokens,
                segment_seconds=None if system == "text" else segment_seconds, segment_tokens=segment_tokens,
                on_progress=None if args.no_progress else
                (lambda i, n, c, s=system, v=voice: print(f"[long-form] {s}/{v}: segment {i}/{n} done", flush=True)))
            latency = time.perf_counter() - start
            records.append({"system": system, "voice": voice, "output": answer.text, "chapters": answer.chapters,
                            "segments": len(answer.chapters or []) or 1, "audio_seconds": answer.audio_seconds,
                            "latency_s": latency, "timings": answer.timings, "peak_rss_mb": _rss_mb()})
    text_out = next((r["output"] for r in records if r["system"] == "text"), None)
    for r in records:
        scores = rouge.compute(predictions=[r["output"]], references=[reference], use_stemmer=True)
        r.update({k: 100 * scores[k] for k in ("rouge1", "rouge2", "rougeL")})
        r["rougeL_vs_text"] = None
        if text_out is not None and r["system"] != "text":
            r["rougeL_vs_text"] = 100 * rouge.compute(predictions=[r["output"]], references=[text_out], use_stemmer=True,
                                                      rouge_types=["rougeL"])["rougeL"]
        r["rtf"] = r["latency_s"] / r["audio_seconds"] if r["audio_seconds"] else None
    config = {"model": str(model_dir), "device": device, "dtype": args.dtype, "documents": [d["id"] for d in docs],
              "num_docs": len(docs), "voices": voices, "prompt": prompt, "max_new_tokens": args.max_new_tokens,
              "segment_seconds": segment_seconds, "text_segment_tokens": segment_tokens, "pause_seconds": PAUSE_SECONDS,
              "text_words": len(text.split()), "torch_threads": torch.get_num_threads(),
              "recordings": {v: str(p) for v, p in recordings.items()}}
    result = {"config": config, "records": records, "reference": reference}
    atomic_write_text(out_dir / "longform.json", json.dumps(result, indent=1))
    atomic_write_text(out_dir / "longform.md", markdown_table(result))
    return result


def markdown_table(result: dict) -> str:
    config = result["config"]
    segment = f"segments of at most {config['segment_seconds']:g} s" if config["segment_seconds"] else \
        "segments as long as one prompt holds"
    lines = [f"Long form: {config['num_docs']} spoken XSum documents in one recording ({segment}; text: "
             f"{config['text_segment_tokens'] or 'what one prompt holds'} tokens a piece), prompt {config['prompt']!r}, "
             f"max_new_tokens {config['max_new_tokens']}, {config['dtype']} on {config['device']}.", "",
             "| system | voice | audio min | segments | R-1 | R-2 | R-L | R-L vs text | latency s | RTF | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda v, d=1: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
    for r in result["records"]:
        minutes = None if r["audio_seconds"] is None else r["audio_seconds"] / 60
        lines.append(f"| {r['system']} | {r['voice']} | {fmt(minutes)} | {r['segments']} | {fmt(r['rouge1'])} | "
                     f"{fmt(r['rouge2'])} | {fmt(r['rougeL'])} | {fmt(r['rougeL_vs_text'])} | {fmt(r['latency_s'])} | "
                     f"{fmt(r['rtf'], 3)} | {fmt(r['peak_rss_mb'], 0)} |")
    return "\n".join(lines) + "\n"


__all__ = ["run_long_form", "concatenate", "markdown_table", "LONG_FORM_PROMPT", "PAUSE_SECONDS"]
