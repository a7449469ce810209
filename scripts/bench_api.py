"""Load test of ``audio-minichat api`` with the official ``openai`` client: CLIENTS concurrent clients each send the
same REQUESTS (audio and text chat completions, greedy, short max_tokens) one after another; every answer must equal
the one the same request gets sent alone. Prints latency p50 / p95 and requests per second (docs/api.md).

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python scripts/bench_api.py [--clients 8] [--per-client 5] [--max-tokens 8]

The server runs in this process (ApiServer on 127.0.0.1, a free port) over the offline default; tests/test_api.py
runs the same ``load_test``.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]


def wav_b64(path: Path, seconds: float | None = None) -> str:
    clip, rate = sf.read(str(path), dtype="float32")
    if seconds is not None:
        clip = clip[: int(seconds * rate)]
    buf = io.BytesIO()
    sf.write(buf, clip, rate, format="WAV")
    return base64.b64encode(buf.getvalue()).decode()


def chat_requests(max_tokens: int = 8) -> list[dict]:
    """Five requests: two with audio (cascade and e2e on the first 4 s of examples/short.wav), three text."""
    audio = {"type": "input_audio", "input_audio": {"data": wav_b64(ROOT / "examples" / "short.wav", 4.0), "format": "wav"}}
    spoken = lambda model, q: {"model": model, "messages": [{"role": "user", "content": [{"type": "text", "text": q}, audio]}]}  # noqa: E731
    text = lambda q: {"model": "audio-minichat-text", "messages": [{"role": "user", "content": q}]}  # noqa: E731
    requests = [spoken("audio-minichat", "Who is speaking?"), spoken("audio-minichat-e2e", "Summarize in one sentence:"),
                text("What is the capital of France?"), text("Name three colours."), text("Say hello in Spanish.")]
    return [{**r, "max_tokens": max_tokens, "temperature": 0} for r in requests]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def load_test(base_url: str, requests: list[dict], clients: int = 8, per_client: int = 5, api_key: str = "unused") -> dict:
    """Each request alone (the expected answers), then ``clients`` threads, each sending ``per_client`` requests
    (client i starts at request i, in turn). Returns failures, mismatches, latencies and requests/s."""
    from openai import OpenAI

    def ask(client, request) -> str:
        return client.chat.completions.create(**request).choices[0].message.content

    alone = OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=600)
    expected = [ask(alone, r) for r in requests]
    latencies, failures, mismatches, lock = [], [], [], threading.Lock()

    def client_loop(i: int) -> None:
        client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=600)
        for k in range(per_client):
            index = (i + k) % len(requests)
            start = time.perf_counter()
            try:
                answer = ask(client, requests[index])
            except Exception as exc:  # noqa: BLE001 - counted, reported
                with lock:
                    failures.append(f"client {i} request {index}: {type(exc).__name__}: {exc}")
                continue
            with lock:
                latencies.append(time.perf_counter() - start)
                if answer != expected[index]:
                    mismatches.append((index, answer, expected[index]))

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {"clients": clients, "per_client": per_client, "requests": clients * per_client, "failures": failures,
            "mismatches": mismatches, "wall_s": round(wall, 2), "requests_per_s": round(len(latencies) / wall, 3),
            "p50_s": round(percentile(latencies, 50), 2) if latencies else None,
            "p95_s": round(percentile(latencies, 95), 2) if latencies else None, "expected": expected}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--per-client", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--model", default=None, help="checkpoint folder (default: the offline default)")
    args = parser.parse_args(argv)
    import warnings

    import torch

    from audio_minichat.app.api import ApiServer
    from audio_minichat.assets.default_build import build_default
    from audio_minichat.inference.speech_llm import SpeechLLM

    from transformers.utils import logging as hf_logging

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    hf_logging.set_verbosity_error()
    llm = SpeechLLM(args.model or build_default())
    server = ApiServer(llm, "127.0.0.1", 0, max_queue=args.clients).start()
    try:
        result = load_test(server.url, chat_requests(args.max_tokens), args.clients, args.per_client)
    finally:
        server.close()
    print(json.dumps({k: v for k, v in result.items() if k != "expected"}, indent=2))
    return 0 if not result["failures"] and not result["mismatches"] else 1


if __name__ == "__main__":
    sys.exit(main())
