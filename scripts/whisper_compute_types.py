"""Which CTranslate2 compute type should the llama.cpp route's Whisper run in (issue 26)? Speed, memory and words.

For each compute type CTranslate2 offers on this CPU (``ctranslate2.get_supported_compute_types("cpu")``; the
checkpoint's Whisper files are float32, quantised as they load), in a fresh process each (so peak memory is its
own): the cascade's transcript of the 2-minute example and the e2e route's soft tokens of it (median of
``--rounds``, after one warm-up), the process's peak memory, and on the 20 spoken XSum documents (eval/benchmark.py's
seeded draw, voice ``joe``): the word error rate of the transcripts against the documents' text and how many
transcripts are word for word float32's. The CPU's flags are recorded beside the figures: a choice holds for the
CPU family it was measured on.

    python scripts/whisper_compute_types.py --threads 2 --out benchmarks/cpu_speed/whisper_compute_types.json

``--alternate N`` times the compute types side by side in one process instead (all loaded, N rounds in alternating
order after a warm-up round, medians): the steadier speed figure, no word counts.

CTranslate2's kernels on another CPU family, stood in for on this one (recorded as ``backend_env``): AMD's choice of
kernels is ``CT2_USE_MKL=0`` (oneDNN for int8); ``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16`` (a Zen 4: AVX-512 with VNNI
and BF16, no AMX) or ``AVX2`` with ``MKL_ENABLE_INSTRUCTIONS=AVX2`` (a CPU without AVX-512) caps the instructions.
The clock, caches and memory stay this machine's: a stand-in for the kernels' ratio, not the other CPU's seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "news_2min.wav"


def measure(compute_type: str, threads: int, rounds: int, num_docs: int, voice: str) -> dict:
    """One compute type, in this process."""
    import numpy as np
    import soundfile as sf

    from audio_minichat.assets.builds import cached_build
    from audio_minichat.audio_io import load_audio
    from audio_minichat.inference.ct2_asr import Ct2Whisper, cached_folder
    from audio_minichat.inference.ct2_soft_tokens import SoftTokens

    model_dir = cached_build()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    whisper = Ct2Whisper(cached_folder(model_dir), threads, compute_type=compute_type)
    load_s = time.perf_counter() - start
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    clip = load_audio(str(EXAMPLE), None, 16000)
    soft = SoftTokens(model_dir, whisper)

    def timed(fn):
        fn()
        took = []
        for _ in range(rounds):
            start = time.perf_counter()
            fn()
            took.append(time.perf_counter() - start)
        return round(statistics.median(took), 3)

    row = {"compute_type": compute_type, "threads": threads, "load_s": round(load_s, 3),
           "cascade_asr_s": timed(lambda: whisper.transcribe(clip)), "e2e_soft_tokens_s": timed(lambda: soft.read(clip)),
           "load_mib": round((loaded - before) / 1024, 1)}
    from audio_minichat.eval.benchmark import DEFAULT_CACHE, load_documents, select_documents

    docs = select_documents(load_documents(80, 400), num_docs, 0)
    cache = DEFAULT_CACHE.expanduser()
    transcripts, soft_reads = [], []
    for doc in docs:
        audio, rate = sf.read(str(cache / voice / f"{doc['id']}.wav"), dtype="float32")
        transcripts.append(whisper.transcribe(np.asarray(audio)))
        soft_reads.append(whisper.decode_text(soft.read(np.asarray(audio))[1]).strip())
    row.update({"peak_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "transcripts": transcripts, "soft_reads": soft_reads, "references": [d["document"] for d in docs],
                "doc_ids": [d["id"] for d in docs]})
    return row


def alternate(types: list[str], threads: int, rounds: int) -> dict:
    """Speed of each compute type, side by side in this process (see the module's text)."""
    from audio_minichat.assets.builds import cached_build
    from audio_minichat.audio_io import load_audio
    from audio_minichat.inference.ct2_asr import Ct2Whisper, cached_folder
    from audio_minichat.inference.ct2_soft_tokens import SoftTokens

    model_dir = cached_build()
    clip = load_audio(str(EXAMPLE), None, 16000)
    whisper = {t: Ct2Whisper(cached_folder(model_dir), threads, compute_type=t) for t in types}
    soft = {t: SoftTokens(model_dir, w) for t, w in whisper.items()}
    took: dict = {t: {"cascade_asr_s": [], "e2e_soft_tokens_s": []} for t in types}
    for r in range(rounds + 1):
        for t in types if r % 2 == 0 else types[::-1]:
            for key, fn in (("cascade_asr_s", lambda: whisper[t].transcribe(clip)), ("e2e_soft_tokens_s", lambda: soft[t].read(clip))):
                start = time.perf_counter()
                fn()
                if r:  # (round 0: the warm-up)
                    took[t][key].append(time.perf_counter() - start)
    return {t: {k: round(statistics.median(v), 3) for k, v in runs.items()} for t, runs in took.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--num-docs", type=int, default=20)
    p.add_argument("--voice", default="joe")
    p.add_argument("--types", default=None, help="comma-separated (default: float32 and every int type offered)")
    p.add_argument("--alternate", type=int, default=0, help="rounds side by side in one process (speed only)")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # (the child process: one compute type)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "cpu_speed" / "whisper_compute_types.json"))
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.one:
        print(json.dumps(measure(args.one, args.threads, args.rounds, args.num_docs, args.voice)))
        return 0
    import ctranslate2

    from audio_minichat.eval.benchmark import DEFAULT_CACHE, load_documents, select_documents, synthesize_documents
    from audio_minichat.metrics.wer import word_error_rate
    from audio_minichat.utils.cpu_features import cpu_flags
    from audio_minichat.utils.cpu_flags import backend_env

    offered = sorted(ctranslate2.get_supported_compute_types("cpu"))
    types = args.types.split(",") if args.types else ["float32"] + [t for t in ("int16", "int8", "int8_float32") if t in offered]
    if args.alternate:
        result = {"config": {**vars(args), "offered": offered, "backend_env": backend_env()}, "alternating": alternate(types, args.threads, args.alternate)}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        for t, row in result["alternating"].items():
            print(f"| {t} | {row['cascade_asr_s']} | {row['e2e_soft_tokens_s']} |")
        return 0
    docs = select_documents(load_documents(80, 400), args.num_docs, 0)
    synthesize_documents(docs, args.voice, DEFAULT_CACHE.expanduser(), progress=False)
    rows = []
    for compute_type in types:
        print(f"[compute types] {compute_type}...", file=sys.stderr, flush=True)
        out = subprocess.run([sys.executable, __file__, "--one", compute_type, "--threads", str(args.threads), "--rounds",
                              str(args.rounds), "--num-docs", str(args.num_docs), "--voice", args.voice],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = rows[0]
    for row in rows:
        row["wer"] = round(100 * word_error_rate(row["references"], row["transcripts"]), 2)
        row["soft_read_wer"] = round(100 * word_error_rate(row["references"], row["soft_reads"]), 2)
        row["same_as_float32"] = sum(a == b for a, b in zip(row["transcripts"], base["transcripts"]))
        row["soft_same_as_float32"] = sum(a == b for a, b in zip(row["soft_reads"], base["soft_reads"]))
    flags = cpu_flags()
    result = {"config": {**vars(args), "offered": offered, "cpu_flags": sorted(f for f in flags if f.startswith(("avx", "amx"))),
                         "backend_env": backend_env()},
              "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"| compute type | cascade ASR s | e2e soft tokens s | load s | Whisper MiB | peak MiB | WER % (cascade / e2e read) | same as float32 (of {len(docs)}) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['compute_type']} | {r['cascade_asr_s']} | {r['e2e_soft_tokens_s']} | {r['load_s']} | {r['load_mib']} | "
              f"{r['peak_mib']} | {r['wer']} / {r['soft_read_wer']} | {r['same_as_float32']} / {r['soft_same_as_float32']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
