"""Streamed training rows: corpus sentences synthesised by the training voices while a trainer runs, nothing cached
to disk (the posterior route's alignment stage: ``training/align_posterior.py``, ``python -m audio_minichat.app.align``).

Row ``i`` is a pure function of (seed, i): the sentence and the voice come from a generator seeded with both, so a
run resumed at row ``i`` sees what it would have seen. The pool's last ``HELD_OUT`` sentences never come up: they
are the held-out set, read by the evaluation voices (``joe``: never trained on; espeak-ng's evaluation voice).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
from pathlib import Path

import numpy as np

from ..utils.io import atomic_write_json

HELD_OUT = 48  # the pool's last texts: never trained on
POOL_TEXTS = 60000
MAX_SECONDS = 30.0  # longer rows are skipped (one encoder window)


def text_pool(seed: int, cache: Path | None = None) -> list[str]:
    """The run's sentences (deterministic in ``seed``; kept in ``cache`` once made: building takes a minute)."""
    from .corpora import build_text_pool

    if cache is not None and cache.is_file():
        return json.loads(cache.read_text(encoding="utf-8"))
    texts = [r["text"] for r in build_text_pool(POOL_TEXTS, seed, min_words=4, max_words=30)]
    if cache is not None:
        atomic_write_json(cache, texts)
    return texts


def row(texts: list[str], voices: list, seed: int, index: int, unique_rows: int = 0) -> tuple[str, object]:
    """Row ``index``: (text, voice), a pure function of (seed, index); held-out texts never come up. ``unique_rows``
    N > 0 repeats the first N rows (row ``index`` is row ``index % N``): the repeated-data arm of a data-vs-compute
    study, the same rows in the same order as the fresh run's first N."""
    if unique_rows:
        index %= unique_rows
    rng = random.Random(f"align:{seed}:{index}")
    return texts[rng.randrange(len(texts) - HELD_OUT)], voices[rng.randrange(len(voices))]


def _produce(queue, seed: int, start: int, voices_n: int, pool: Path, unique_rows: int = 0) -> None:
    """Worker: rows ``start, start + 1, ...`` synthesised, as (index, text, audio) on ``queue`` (audio None: a row the
    engine refused)."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    from .tts import synthesize
    from .voices import training_voices

    texts, voices = text_pool(seed, pool), training_voices(seed, voices_n)
    index = start
    while True:
        text, voice = row(texts, voices, seed, index, unique_rows)
        try:
            audio = synthesize(text, voice)
        except Exception:  # noqa: BLE001 - a TTS engine's refusal skips the row
            audio = None
        queue.put((index, text, audio))
        index += 1


def held_out(texts: list[str], voice_names=("joe", "espeak")) -> dict[str, list[tuple[str, np.ndarray]]]:
    """The held-out sentences read by each evaluation voice: {voice: [(text, audio)]}."""
    from .tts import evaluation_voices, synthesize

    joe, espeak = evaluation_voices()  # joe: never trained on
    voices = {"joe": joe, "espeak": espeak}
    return {name: [(t, synthesize(t, voices[name])) for t in texts[-HELD_OUT:]] for name in voice_names}


class RowStream:
    """Rows ``start, start + 1, ...`` from a worker process, handed out in index order: ``take(n)`` -> n (text, audio)
    rows; ``next_row`` (the index to resume from) and ``skipped`` (rows the engine refused or over MAX_SECONDS).
    ``unique_rows`` N > 0: the first N rows over and over (``row``)."""

    def __init__(self, seed: int, start: int, voices: int, pool: Path, queue_size: int = 64, unique_rows: int = 0):
        ctx = mp.get_context("fork")
        self.queue = ctx.Queue(maxsize=queue_size)
        self.worker = ctx.Process(target=_produce, args=(self.queue, seed, start, voices, pool, unique_rows),
                                 daemon=True)
        self.worker.start()
        self.next_row, self.skipped = start, 0
        self._pending: dict[int, tuple] = {}

    def take(self, n: int, sampling_rate: int = 16000) -> list[tuple[str, np.ndarray]]:
        batch = []
        while len(batch) < n:
            while self.next_row not in self._pending:
                index, text, audio = self.queue.get(timeout=300)
                self._pending[index] = (text, audio)
            text, audio = self._pending.pop(self.next_row)
            self.next_row += 1
            if audio is None or len(audio) > MAX_SECONDS * sampling_rate:
                self.skipped += 1
                continue
            batch.append((text, audio))
        return batch

    def close(self) -> None:
        self.worker.terminate()
        self.worker.join(timeout=10)


__all__ = ["HELD_OUT", "POOL_TEXTS", "RowStream", "held_out", "row", "text_pool"]
