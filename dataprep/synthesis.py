"""Stage 1 of a data build: speech for every planned row (TTS, or the HF dataset's audio decoded and
resampled to 16 kHz) in worker processes, one committed shard stage (``synth/``) at a time."""

from __future__ import annotations

import io
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np

from .plan import _open_hf
from .shards import _shard_dir, shard_stage

SAMPLE_RATE = 16_000


# ------------------------------------------------------------------------------------------------ stage 1


def _worker_init():
    try:
        import torch

        torch.set_num_threads(1)
    except Exception:
        pass


def _decode_audio_bytes(value) -> np.ndarray:
    import soundfile as sf

    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        src = io.BytesIO(data) if data else path
    else:
        src = value
    if src is None:
        raise ValueError("no audio bytes or path")
    audio, sr = sf.read(src, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if sr != SAMPLE_RATE:
        import torch
        import torchaudio.functional as AF

        with torch.no_grad():
            audio = AF.resample(torch.from_numpy(np.ascontiguousarray(audio)), int(sr), SAMPLE_RATE).numpy()
    return np.asarray(audio, dtype=np.float32)


def _synth_one(job: tuple) -> dict:
    """Pool worker: one row -> {"id", "wav" | "reason", "detail"} (never raises)."""
    row, max_seconds, hf_audio = job
    rid = row["id"]
    text = row["transcript"]
    if not text or not any(ch.isalnum() for ch in text):
        return {"id": rid, "reason": "empty_text", "detail": repr(text[:80])}
    try:
        if hf_audio is not None:
            audio = _decode_audio_bytes(hf_audio)
            if audio.size == 0:
                return {"id": rid, "reason": "empty_audio", "detail": ""}
        else:
            from .tts import TTSError, Voice, check_training_voice, synthesize

            voice = check_training_voice(Voice.from_dict(row["voice_spec"]))
            try:
                audio = synthesize(text, voice)
            except TTSError as e:
                return {"id": rid, "reason": "tts_error", "detail": str(e)[:300]}
    except Exception as e:  # undecodable audio, unexpected engine errors: skip the row, never stop the build
        return {"id": rid, "reason": "audio_error" if hf_audio is not None else "tts_error",
                "detail": f"{type(e).__name__}: {e}"[:300]}
    seconds = audio.size / SAMPLE_RATE
    if max_seconds and seconds > float(max_seconds):
        return {"id": rid, "reason": "too_long", "detail": f"{seconds:.1f} s > {max_seconds} s"}
    from .audio_dataset import encode_wav

    return {"id": rid, "wav": encode_wav(np.clip(audio, -1.0, 1.0), SAMPLE_RATE), "duration": round(seconds, 3)}


def _write_synth_shard(out: Path, k: int, rows: list[dict], results: list[dict]) -> None:
    from .audio_dataset import audio_dataset

    by_id = {r["id"]: r for r in results}
    cols = {c: [] for c in ("id", "audio", "transcript", "prompt", "source", "voice", "split", "duration")}
    skipped = []
    for row in rows:
        res = by_id[row["id"]]
        if "wav" not in res:
            skipped.append({"id": row["id"], "reason": res["reason"], "detail": res.get("detail", "")})
            continue
        for c in ("id", "transcript", "prompt", "source", "voice", "split"):
            cols[c].append(row[c])
        cols["audio"].append(res["wav"])
        cols["duration"].append(float(res["duration"]))
    with shard_stage(_shard_dir(out, k), "synth") as tmp:
        if cols["id"]:
            audio_dataset(cols).save_to_disk(str(tmp / "data"))
        (tmp / "skipped.json").write_text(json.dumps(skipped, ensure_ascii=False))
        (tmp / "ids.json").write_text(json.dumps(cols["id"]))


def run_synthesis(cfg: dict, out: Path, rows: list[dict], shards: list[list[dict]]) -> float:
    from tqdm.auto import tqdm

    todo = [k for k in range(len(shards)) if not (_shard_dir(out, k) / "synth").exists()]
    if not todo:
        return 0.0
    t0 = time.perf_counter()
    hf_ds = _open_hf(cfg["hf_dataset"]) if cfg.get("hf_dataset") else None
    acol = cfg["hf_dataset"].get("audio_column", "audio") if hf_ds is not None else None
    workers = max(1, int(cfg.get("workers") or 1))
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    pool = ctx.Pool(workers, initializer=_worker_init) if workers > 1 else None
    bar = tqdm(total=sum(len(shards[k]) for k in todo), desc="synthesis", unit="utt", dynamic_ncols=True)
    try:
        for k in todo:
            jobs = [(r, cfg.get("max_seconds"), hf_ds[r["hf_index"]][acol] if hf_ds is not None else None) for r in shards[k]]
            results = []
            it = pool.imap(_synth_one, jobs, chunksize=2) if pool is not None else map(_synth_one, jobs)
            for res in it:
                results.append(res)
                bar.update(1)
            _write_synth_shard(out, k, shards[k], results)
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()
    return time.perf_counter() - t0
