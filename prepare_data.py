"""Build paired speech + transcript training data with teacher responses, offline, in resumable shards.

    python -m audio_minichat.prepare_data --config configs/data_default.yaml [--out DIR] [--num N]
    python -m audio_minichat.prepare_data --config configs/data_default.yaml \\
        --hf-dataset NAME_OR_PATH --audio-column audio --text-column text --split train

Output (``OUT``):

    OUT/plan.jsonl                 every planned row: id, split, source, transcript, prompt, voice (fixed once)
    OUT/shards/shard-XXXXX/synth/  stage 1: a ``datasets`` shard (audio, transcript, prompt, ...) + skipped.json
    OUT/shards/shard-XXXXX/teacher/ stage 2: responses.jsonl (teacher answer per surviving row) + skipped.json
    OUT/dataset_dict.json, OUT/train/, OUT/validation/   the final ``DatasetDict`` (``load_from_disk(OUT)``)
    OUT/report.json                counts per skip reason with examples, per-stage timings

Rows: ``audio`` (``Audio(sampling_rate=16000)``, 16 kHz PCM16 WAV bytes), ``transcript``, ``prompt`` (user
content with exactly one ``<|audio|>``), ``response`` (the frozen LLM's greedy answer to the prompt's text
version), ``source`` (text corpus or dataset), ``voice`` (``tts.Voice.id``: ``engine:name+variant@rate,pitch``),
``id`` and ``duration`` (seconds).

Resume: each shard stage is written to a temporary directory and ``os.replace``d into place, so a shard stage
exists completely or not at all; a rerun with the same ``OUT`` skips finished shard stages and redoes the rest.
The plan is written once (atomically) and reused, so row ids, voices, prompts and the split never change.
Bad rows (empty text, TTS failure, audio too long, undecodable audio, empty teacher answer) are skipped and
counted in ``report.json``; the build does not stop for them.

Measured on the project's 2-core CPU machine (shared with other jobs): see the README's "Training data" notes
and ``report.json["timings"]`` of a build.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import multiprocessing as mp
import os
import random
import re
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

AUDIO_TOKEN = "<|audio|>"
SAMPLE_RATE = 16_000
PLAN_VERSION = 1
KILL_ENV = "AUDIO_MINICHAT_PREPARE_KILL"  # test hook: "after:N" or "before-commit:N" -> os._exit(17)

DEFAULT_INSTRUCTIONS = [
    {"text": "Summarize:", "position": "before"},
    {"text": "Summarize this in one sentence.", "position": "after"},
    {"text": "Repeat this:", "position": "before"},
    {"text": "Repeat this back to me word for word.", "position": "after"},
    {"text": "What is the main point of the following?", "position": "before"},
    {"text": "Answer or respond to this:", "position": "before"},
    {"text": "Rewrite this more simply.", "position": "after"},
    {"text": "Translate this into plain, simple English:", "position": "before"},
    {"text": "Give a short title for this.", "position": "after"},
    {"text": "Continue the following text:", "position": "before"},
]

DEFAULT_CONFIG: dict = {
    "out": "data/default",
    "num": 2000,
    "seed": 0,
    "validation_fraction": 0.05,
    "shard_size": 250,
    "workers": 2,
    "max_seconds": 30.0,
    "text": {"sources": None, "min_words": 5, "max_words": 60, "per_doc": 2, "extra_documents": {}},
    "voices": {"n": 64, "seed": 0, "engines": None, "list": None},
    "prompts": {"instruction_fraction": 0.25, "instructions": DEFAULT_INSTRUCTIONS},
    "teacher": {
        "model": "default",  # "default" -> default_model.build_default(), else an AudioMiniChat checkpoint dir
        "dtype": "bfloat16",
        "batch_size": 16,
        "max_new_tokens_factor": 2.0,
        "max_new_tokens_cap": 128,
        "min_new_tokens": 16,
        "trim_incomplete": True,  # an answer cut by the budget loses its unfinished last sentence
        "threads": None,
        "system": None,
    },
    "hf_dataset": None,  # {"name": NAME_OR_PATH, "audio_column", "text_column", "split", "voice_column"}
}


# ------------------------------------------------------------------------------------------------ config


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def load_config(path: Optional[str] = None, overrides: Optional[dict] = None) -> dict:
    raw = {}
    if path:
        import yaml

        with open(path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh) or {}
    unknown = set(raw) - set(DEFAULT_CONFIG)
    if unknown:
        raise ValueError(f"unknown config keys {sorted(unknown)}; expected some of {sorted(DEFAULT_CONFIG)}")
    cfg = _merge(DEFAULT_CONFIG, raw)
    return _merge(cfg, overrides or {})


# ------------------------------------------------------------------------------------------------ loops


_WORD_RE = re.compile(r"\S+")


def _norm_tok(w: str) -> str:
    return re.sub(r"[^\w]+", "", w.lower()) or w


def trim_repetition(text: str, max_ngram: int = 40, min_repeats: int = 3, min_repeats_long: int = 2,
                    long_ngram: int = 6, min_repeats_unigram: int = 4) -> str:
    """Cut a degenerate repetition loop off the end of ``text``, keeping its first occurrence.

    The tail is a loop when an n-gram of words (n <= ``max_ngram``, compared case- and punctuation-
    insensitively) repeats back to back up to the end, possibly ending inside a partial repeat: at least
    ``min_repeats_unigram`` times for one word, ``min_repeats`` for 2..``long_ngram``-1 words and
    ``min_repeats_long`` for longer n-grams (a whole sentence said twice in a row). Text before the loop
    keeps its original formatting. Returns ``text`` unchanged when there is no loop.
    """
    spans = [m.span() for m in _WORD_RE.finditer(text)]
    words = [_norm_tok(text[a:b]) for a, b in spans]
    n_words = len(words)
    best_keep = None
    for n in range(1, min(max_ngram, n_words // 2) + 1):
        # longest suffix periodic with period n: words[j] == words[j + n] for every j in it
        j = n_words - 1 - n
        while j >= 0 and words[j] == words[j + n]:
            j -= 1
        start = j + 1  # words[start:] has period n
        length = n_words - start
        need = min_repeats_unigram if n == 1 else (min_repeats_long if n >= long_ngram else min_repeats)
        if length >= n * need:
            keep = start + n  # the first occurrence of the cycle
            if best_keep is None or keep < best_keep:
                best_keep = keep
    if best_keep is None or best_keep >= n_words:
        return text
    return text[: spans[best_keep - 1][1]].rstrip()


_SENT_END = re.compile(r"[.!?][\"')\]]*(?=\s|$)")


def trim_incomplete_sentence(text: str) -> str:
    """Drop a trailing unfinished sentence (an answer cut by the token budget), if a finished one precedes it."""
    ends = [m.end() for m in _SENT_END.finditer(text)]
    if not ends or ends[-1] == len(text.rstrip()):
        return text
    return text[: ends[-1]].rstrip()


# ------------------------------------------------------------------------------------------------ files


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


_COMMITS = 0


def _kill_hook(event: str) -> None:
    """Test hook: ``AUDIO_MINICHAT_PREPARE_KILL=after:N`` exits right after the N-th shard commit,
    ``before-commit:N`` exits with the N-th shard written to its temporary directory but not committed."""
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return
    kind, _, num = spec.partition(":")
    if kind == event and _COMMITS + (1 if event == "before-commit" else 0) == int(num):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(17)


def _commit_dir(tmp: Path, final: Path) -> None:
    """Move a finished temporary directory into place (atomic: ``final`` exists complete or not at all)."""
    global _COMMITS
    _kill_hook("before-commit")
    if final.exists():  # a stale copy (should not happen: finished stages are skipped)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _COMMITS += 1
    _kill_hook("after")


def _tmp_dir(parent: Path, name: str) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent))


def _clean_stale_tmp(root: Path) -> int:
    n = 0
    if root.exists():
        for p in list(root.rglob(".*.tmp-*")) + list(root.glob(".final.tmp-*")):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
                n += 1
    return n


# ------------------------------------------------------------------------------------------------ plan


def _stable_rng(*parts) -> random.Random:
    return random.Random(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest())


def make_prompt(rng: random.Random, prompts_cfg: dict) -> str:
    """User content with exactly one audio placeholder: the audio alone, or an instruction before/after it."""
    instructions = prompts_cfg.get("instructions") or []
    if instructions and rng.random() < float(prompts_cfg.get("instruction_fraction", 0.0)):
        ins = rng.choice(instructions)
        if isinstance(ins, str):
            ins = {"text": ins, "position": "before"}
        text = str(ins["text"]).strip()
        if AUDIO_TOKEN in text:
            raise ValueError(f"instruction {text!r} must not contain {AUDIO_TOKEN}")
        return f"{text}\n{AUDIO_TOKEN}" if ins.get("position", "before") == "before" else f"{AUDIO_TOKEN}\n{text}"
    return AUDIO_TOKEN


def _voices(cfg: dict):
    from .tts import Voice, check_training_voice, training_voices

    vc = cfg["voices"]
    if vc.get("list"):
        voices = [Voice.from_dict(d) for d in vc["list"]]
    else:
        voices = training_voices(int(vc.get("seed", 0)), int(vc.get("n", 64)), vc.get("engines"))
    for v in voices:
        check_training_voice(v)  # raises for piper joe / eval_only voices
    if not voices:
        raise ValueError("no training voices configured")
    return voices


def _assign_splits(ids: Sequence[str], fraction: float, seed: int) -> dict[str, str]:
    n_val = int(round(len(ids) * float(fraction)))
    if fraction > 0 and len(ids) >= 2:
        n_val = max(1, min(n_val, len(ids) - 1))
    order = sorted(ids)
    random.Random(f"split:{seed}").shuffle(order)
    val = set(order[:n_val])
    return {i: ("validation" if i in val else "train") for i in ids}


def plan_tts(cfg: dict, skipped: list) -> list[dict]:
    from .corpora import build_text_pool, is_eval_text

    tc = cfg["text"]
    seed = int(cfg["seed"])
    pool = build_text_pool(
        int(cfg["num"]), seed, int(tc["min_words"]), int(tc["max_words"]),
        sources=tc.get("sources"), extra_sources=tc.get("extra_documents") or None, per_doc=int(tc.get("per_doc", 2)),
    )
    voices = _voices(cfg)
    rows = []
    for i, item in enumerate(pool):
        rid = f"tts-{seed}-{i:07d}"
        text = " ".join(str(item["text"]).split())
        if is_eval_text(text):  # build_text_pool drops these already; never let one through
            skipped.append({"id": rid, "reason": "eval_text", "detail": text[:80]})
            continue
        rng = _stable_rng("row", seed, rid)
        voice = voices[rng.randrange(len(voices))]
        rows.append({"id": rid, "source": item["source"], "transcript": text, "prompt": make_prompt(rng, cfg["prompts"]),
                     "voice": voice.id, "voice_spec": voice.to_dict()})
    return rows


_AUDIO_EXT = {".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif"}


def _read_audiofolder(root: Path, split: str, audio_column: str):
    """A local ``audiofolder`` (audio files + ``metadata.csv``/``.jsonl`` with ``file_name``), read without
    ``datasets``' audiofolder builder (which needs torchcodec to store paths). ``root/<split>/`` is used when
    it exists. Audio cells are ``{"bytes": None, "path": ...}``, decoded later with soundfile."""
    import csv

    from datasets import Dataset

    base = root / split if (root / split).is_dir() else root
    metas = sorted(base.rglob("metadata.csv")) + sorted(base.rglob("metadata.jsonl"))
    if not metas:
        raise FileNotFoundError(f"{base}: an audiofolder needs metadata.csv or metadata.jsonl (file_name + transcript)")
    rows: list[dict] = []
    for meta in metas:
        if meta.suffix == ".csv":
            with open(meta, newline="", encoding="utf-8") as fh:
                recs = list(csv.DictReader(fh))
        else:
            recs = [json.loads(line) for line in meta.read_text(encoding="utf-8").splitlines() if line.strip()]
        for rec in recs:
            rec = dict(rec)
            path = (meta.parent / rec.pop("file_name")).resolve()
            rec[audio_column] = {"bytes": None, "path": str(path)}
            rows.append(rec)
    cols = {k: [r.get(k) for r in rows] for k in dict.fromkeys(k for r in rows for k in r)}
    return Dataset.from_dict(cols)


def _open_hf(hf: dict):
    """The HF dataset split with its audio column left undecoded (datasets 5 decodes with torchcodec)."""
    import datasets
    from datasets import Audio

    name, split = str(hf["name"]), hf.get("split", "train")
    p = Path(name)
    if p.is_dir() and ((p / "dataset_dict.json").exists() or (p / "dataset_info.json").exists() or (p / "state.json").exists()):
        ds = datasets.load_from_disk(str(p))
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[split]
    elif p.is_dir():
        ds = _read_audiofolder(p, split, hf.get("audio_column", "audio"))
    else:
        ds = datasets.load_dataset(name, split=split)
    col = hf.get("audio_column", "audio")
    if col not in ds.column_names:
        raise KeyError(f"{name}: no audio column {col!r} (columns: {ds.column_names})")
    if isinstance(ds.features[col], Audio):
        ds = ds.cast_column(col, Audio(decode=False))
    return ds


def plan_hf(cfg: dict, skipped: list) -> list[dict]:
    from .corpora import is_eval_text

    hf = cfg["hf_dataset"]
    ds = _open_hf(hf)
    tcol = hf.get("text_column", "text")
    texts = ds[tcol]
    vcol = hf.get("voice_column")
    speakers = ds[vcol] if vcol and vcol in ds.column_names else None
    num = int(cfg["num"]) if cfg.get("num") else len(ds)
    tag = Path(str(hf["name"])).name or str(hf["name"])
    rows = []
    for i in range(min(num, len(ds))):
        rid = f"hf-{i:07d}"
        text = " ".join(str(texts[i] or "").split())
        if text and is_eval_text(text):
            skipped.append({"id": rid, "reason": "eval_text", "detail": text[:80]})
            continue
        rng = _stable_rng("row", cfg["seed"], rid)
        voice = f"hf:{tag}" + (f":{speakers[i]}" if speakers is not None else "")
        rows.append({"id": rid, "source": tag, "transcript": text, "prompt": make_prompt(rng, cfg["prompts"]),
                     "voice": voice, "hf_index": i})
    return rows


def _plan_key(cfg: dict) -> str:
    keep = {k: cfg[k] for k in ("num", "seed", "validation_fraction", "text", "voices", "prompts", "hf_dataset", "shard_size")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_or_make_plan(cfg: dict, out: Path) -> tuple[list[dict], list[dict]]:
    """The fixed list of rows to build (written once, atomically; reused on resume)."""
    path = out / "plan.jsonl"
    meta_path = out / "plan_meta.json"
    key = _plan_key(cfg)
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("key") != key:
            raise RuntimeError(
                f"{out} holds a build with a different data config (plan key {meta.get('key')} != {key}); "
                "use another --out or delete it"
            )
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return rows, meta.get("skipped", [])
    skipped: list[dict] = []
    rows = plan_hf(cfg, skipped) if cfg.get("hf_dataset") else plan_tts(cfg, skipped)
    splits = _assign_splits([r["id"] for r in rows], float(cfg["validation_fraction"]), int(cfg["seed"]))
    for r in rows:
        r["split"] = splits[r["id"]]
    out.mkdir(parents=True, exist_ok=True)
    # meta first, plan last: the plan file is the marker that planning finished
    _atomic_write_text(meta_path, json.dumps({"key": key, "version": PLAN_VERSION, "rows": len(rows), "skipped": skipped}))
    _atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return rows, skipped


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


def _shard_dir(out: Path, k: int) -> Path:
    return out / "shards" / f"shard-{k:05d}"


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
    shard = _shard_dir(out, k)
    tmp = _tmp_dir(shard, "synth")
    if cols["id"]:
        audio_dataset(cols).save_to_disk(str(tmp / "data"))
    (tmp / "skipped.json").write_text(json.dumps(skipped, ensure_ascii=False))
    (tmp / "ids.json").write_text(json.dumps(cols["id"]))
    _commit_dir(tmp, shard / "synth")


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


# ------------------------------------------------------------------------------------------------ stage 2


class Teacher:
    """The frozen LLM answering the text version of each prompt: greedy, left-padded batches."""

    def __init__(self, tcfg: dict):
        import torch

        from .modeling_audio_minichat import AudioMiniChatForConditionalGeneration
        from .processing_audio_minichat import AudioMiniChatProcessor

        self.cfg = tcfg
        src = tcfg.get("model") or "default"
        if src == "default":
            from .default_model import build_default

            src = build_default()
        if tcfg.get("threads"):
            torch.set_num_threads(int(tcfg["threads"]))
        dtype = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float32": torch.float32,
                 "fp32": torch.float32, "float16": torch.float16}[str(tcfg.get("dtype", "bfloat16"))]
        self.processor = AudioMiniChatProcessor.from_pretrained(str(src))
        self.model = AudioMiniChatForConditionalGeneration.from_pretrained(str(src), dtype=dtype).eval()
        self.tokenizer = self.processor.tokenizer
        self.source = str(src)

    def text_prompt(self, prompt: str, transcript: str) -> str:
        content = prompt.replace(AUDIO_TOKEN, self.processor.audio_token)
        return self.processor.build_prompt(content, transcripts=[transcript], system=self.cfg.get("system"))

    def budget(self, prompt: str, transcript: str) -> int:
        """max_new_tokens = factor x the user content's tokens (its text version), clamped to [min, cap]."""
        content = prompt.replace(AUDIO_TOKEN, transcript.strip())
        n = len(self.tokenizer(content, add_special_tokens=False)["input_ids"])
        budget = int(math.ceil(float(self.cfg.get("max_new_tokens_factor", 2.0)) * n))
        cap = self.cfg.get("max_new_tokens_cap")
        budget = max(int(self.cfg.get("min_new_tokens", 1)), budget)
        return min(budget, int(cap)) if cap else budget

    def answer(self, items: list[tuple[str, str]]) -> list[tuple[str, bool]]:
        """[(prompt, transcript)] -> [(response, hit_token_budget)], one left-padded greedy batch."""
        import torch

        texts = [self.text_prompt(p, t) for p, t in items]
        budgets = [self.budget(p, t) for p, t in items]
        enc = self.processor(text=texts, padding_side="left")
        eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
        with torch.inference_mode():
            gen = self.model.generate(
                input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], max_new_tokens=max(budgets),
                do_sample=False, num_beams=1, eos_token_id=eos, pad_token_id=pad,
                temperature=None, top_p=None, top_k=None,
            )
        new = gen[:, enc["input_ids"].shape[1]:]
        return [self.finish(row.tolist(), budget) for row, budget in zip(new, budgets)]

    def finish(self, ids: list[int], budget: int) -> tuple[str, bool]:
        """Generated token ids (up to and including EOS, if any) -> (response, hit_token_budget): cut at EOS or
        the row's budget, decoded, repetition loops trimmed, an unfinished last sentence dropped when cut."""
        eos = self.tokenizer.eos_token_id
        stop = next((i for i, t in enumerate(ids) if t == eos), None)
        hit = stop is None or stop >= budget
        ids = ids[: min(budget, stop if stop is not None else len(ids))]
        text = trim_repetition(self.tokenizer.decode(ids, skip_special_tokens=True).strip())
        if hit and self.cfg.get("trim_incomplete", True):
            text = trim_incomplete_sentence(text)
        return text, hit


def _synth_ids(out: Path, k: int) -> list[str]:
    return json.loads((_shard_dir(out, k) / "synth" / "ids.json").read_text())


def run_teacher(cfg: dict, out: Path, rows: list[dict], shards: list[list[dict]]) -> tuple[float, int]:
    from tqdm.auto import tqdm

    todo = [k for k in range(len(shards)) if not (_shard_dir(out, k) / "teacher").exists()]
    if not todo:
        return 0.0, 0
    t0 = time.perf_counter()
    teacher = Teacher(cfg["teacher"])
    by_id = {r["id"]: r for r in rows}
    bs = max(1, int(cfg["teacher"].get("batch_size", 16)))
    n_tokens = 0
    bar = tqdm(total=sum(len(_synth_ids(out, k)) for k in todo), desc="teacher", unit="row", dynamic_ncols=True)
    try:
        for k in todo:
            ids = _synth_ids(out, k)
            # sort by prompt length so each batch pads little and its token budgets are alike
            order = sorted(ids, key=lambda i: len(by_id[i]["transcript"]) + len(by_id[i]["prompt"]))
            answers: dict[str, tuple[str, bool]] = {}
            for b in range(0, len(order), bs):
                batch = order[b:b + bs]
                res = teacher.answer([(by_id[i]["prompt"], by_id[i]["transcript"]) for i in batch])
                answers.update(zip(batch, res))
                bar.update(len(batch))
            lines, skipped = [], []
            for i in ids:
                text, hit = answers[i]
                if not text.strip():
                    skipped.append({"id": i, "reason": "empty_response", "detail": ""})
                    continue
                n_tokens += len(teacher.tokenizer(text, add_special_tokens=False)["input_ids"])
                lines.append(json.dumps({"id": i, "response": text, "hit_budget": hit}, ensure_ascii=False))
            shard = _shard_dir(out, k)
            tmp = _tmp_dir(shard, "teacher")
            (tmp / "responses.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
            (tmp / "skipped.json").write_text(json.dumps(skipped, ensure_ascii=False))
            (tmp / "meta.json").write_text(json.dumps({"model": teacher.source, "config": cfg["teacher"]}, default=str))
            _commit_dir(tmp, shard / "teacher")
    finally:
        bar.close()
    return time.perf_counter() - t0, n_tokens


# ------------------------------------------------------------------------------------------------ assemble


def assemble(cfg: dict, out: Path, shards: list[list[dict]]):
    """Concatenate the finished shards into ``OUT`` as a DatasetDict (train/validation)."""
    from datasets import Audio, DatasetDict, concatenate_datasets, load_from_disk

    parts = []
    for k in range(len(shards)):
        shard = _shard_dir(out, k)
        if not (shard / "synth" / "data").exists():
            continue
        ds = load_from_disk(str(shard / "synth" / "data"))
        ds = ds.cast_column("audio", Audio(sampling_rate=SAMPLE_RATE, decode=False))
        resp = {}
        for line in (shard / "teacher" / "responses.jsonl").read_text(encoding="utf-8").splitlines():
            if line.strip():
                d = json.loads(line)
                resp[d["id"]] = d["response"]
        keep = [i for i, rid in enumerate(ds["id"]) if rid in resp]
        ds = ds.select(keep)
        ds = ds.add_column("response", [resp[rid] for rid in ds["id"]])
        parts.append(ds)
    if not parts:
        return None  # every row was skipped: report.json says why
    full = concatenate_datasets(parts)
    # guard: never a reserved evaluation voice in training data
    bad = [v for v in set(full["voice"]) if v.startswith("piper:")]
    if bad:
        raise AssertionError(f"evaluation-only voices in the training data: {bad}")
    splits = {}
    split_col = full["split"]
    for name in ("train", "validation"):
        idx = [i for i, s in enumerate(split_col) if s == name]
        d = full.select(idx).remove_columns(["split"])
        cols = ["id", "audio", "transcript", "prompt", "response", "source", "voice", "duration"]
        d = d.select_columns(cols)
        splits[name] = d.cast_column("audio", Audio(sampling_rate=SAMPLE_RATE))
    dd = DatasetDict(splits)
    tmp = Path(tempfile.mkdtemp(prefix=".final.tmp-", dir=out))
    dd.save_to_disk(str(tmp))
    # dataset_dict.json is removed first and put back last: a reader never sees a half-replaced set
    marker = out / "dataset_dict.json"
    if marker.exists():
        marker.unlink()
    for name in splits:
        if (out / name).exists():
            shutil.rmtree(out / name)
        os.replace(tmp / name, out / name)
    os.replace(tmp / "dataset_dict.json", marker)
    shutil.rmtree(tmp, ignore_errors=True)
    return dd


def _report(out: Path, n_shards: int, plan_skipped: list, planned: int, dd, timings: dict) -> dict:
    counts: dict[str, int] = {}
    examples: dict[str, list] = {}
    for s in plan_skipped + [x for k in range(n_shards) for stage in ("synth", "teacher")
                             for x in _read_json(_shard_dir(out, k) / stage / "skipped.json", [])]:
        counts[s["reason"]] = counts.get(s["reason"], 0) + 1
        ex = examples.setdefault(s["reason"], [])
        if len(ex) < 5:
            ex.append(s)
    dd = dd or {}
    rows = {name: len(d) for name, d in dd.items()}
    seconds = sum(sum(d["duration"]) for d in dd.values())
    rep = {"planned": planned + len(plan_skipped), "rows": rows, "total_rows": sum(rows.values()),
           "skipped": counts, "skipped_total": sum(counts.values()), "examples": examples,
           "audio_hours": round(seconds / 3600, 3), "timings": timings}
    _atomic_write_text(out / "report.json", json.dumps(rep, indent=2, ensure_ascii=False))
    return rep


def _read_json(path: Path, default):
    return json.loads(path.read_text()) if path.exists() else default


def build(cfg: dict) -> dict:
    out = Path(cfg["out"])
    out.mkdir(parents=True, exist_ok=True)
    _clean_stale_tmp(out)
    t0 = time.perf_counter()
    rows, plan_skipped = load_or_make_plan(cfg, out)
    t_plan = time.perf_counter() - t0
    size = max(1, int(cfg["shard_size"]))
    shards = [rows[i:i + size] for i in range(0, len(rows), size)]
    t_synth = run_synthesis(cfg, out, rows, shards)
    t_teacher, n_tokens = run_teacher(cfg, out, rows, shards)
    t1 = time.perf_counter()
    dd = assemble(cfg, out, shards)
    t_asm = time.perf_counter() - t1
    prev = _read_json(out / "report.json", {}).get("timings", {})
    prev.pop("previous", None)
    timings = {"plan_s": round(t_plan, 1), "synthesis_s": round(t_synth, 1), "teacher_s": round(t_teacher, 1),
               "teacher_tokens": n_tokens, "assemble_s": round(t_asm, 1),
               "note": "this invocation only (finished shards are skipped on resume)", "previous": prev or None}
    rep = _report(out, len(shards), plan_skipped, len(rows), dd, timings)
    if dd is None:
        print(f"WARNING: no row survived; see {out / 'report.json'}", file=sys.stderr)
    print(json.dumps({k: rep[k] for k in ("rows", "skipped", "timings")}, default=str))
    return rep


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description="Build paired speech + text training data with teacher responses.")
    p.add_argument("--config", help="YAML data config (configs/data_default.yaml)")
    p.add_argument("--out", help="output directory (overrides the config's `out`)")
    p.add_argument("--num", type=int, help="number of utterances to plan (overrides `num`)")
    p.add_argument("--hf-dataset", help="HF audio dataset: hub name, save_to_disk dir or audiofolder dir")
    p.add_argument("--audio-column", default="audio")
    p.add_argument("--text-column", default="text")
    p.add_argument("--split", default="train")
    p.add_argument("--teacher-model", help="AudioMiniChat checkpoint dir for the teacher (overrides teacher.model)")
    args = p.parse_args(argv)
    over: dict = {}
    if args.out:
        over["out"] = args.out
    if args.num is not None:
        over["num"] = args.num
    if args.hf_dataset:
        over["hf_dataset"] = {"name": args.hf_dataset, "audio_column": args.audio_column,
                              "text_column": args.text_column, "split": args.split}
    if args.teacher_model:
        over["teacher"] = {"model": args.teacher_model}
    cfg = load_config(args.config, over)
    build(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
