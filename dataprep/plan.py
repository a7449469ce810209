"""The plan of a data build: every row's id, split, source, transcript, prompt and voice, fixed once.

Rows come from the text corpora read by training TTS voices (:func:`plan_tts`) or from an HF audio dataset
(:func:`plan_hf`); ``OUT/plan.jsonl`` is written once (atomically) and reused on resume, so row ids, voices,
prompts and the split never change.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Sequence

from ..configuration_audio_minichat import DEFAULT_AUDIO_TOKEN
from ..processing_audio_minichat import AudioMiniChatProcessor
from ..utils.io import atomic_write_text

#: The core's audio placeholder (``configuration_audio_minichat.DEFAULT_AUDIO_TOKEN``): prompts carry exactly one.
AUDIO_TOKEN = DEFAULT_AUDIO_TOKEN
PLAN_VERSION = 1


def _stable_rng(*parts) -> random.Random:
    return random.Random(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest())


def make_prompt(rng: random.Random, prompts_cfg: dict) -> str:
    """User content with exactly one audio placeholder: the audio alone, or an instruction before/after it
    (:meth:`AudioMiniChatProcessor.audio_with_text`'s parts, one line each)."""
    instructions = prompts_cfg.get("instructions") or []
    text, position = None, "before"
    dense = float(prompts_cfg.get("dense_fraction") or 0.0)
    if not 0.0 <= dense + float(prompts_cfg.get("instruction_fraction", 0.0)) <= 1.0 or dense < 0:
        raise ValueError(f"prompts: dense_fraction ({dense}) and instruction_fraction must be >= 0 and sum to <= 1")
    # a build without dense rows draws exactly as before (its plan, and so its data, stay byte-identical)
    if dense > 0 and rng.random() < dense:
        if not prompts_cfg.get("dense_instructions"):
            raise ValueError("prompts: dense_fraction > 0 needs dense_instructions")
        ins = rng.choice(prompts_cfg["dense_instructions"])
    elif instructions and rng.random() < float(prompts_cfg.get("instruction_fraction", 0.0)) / (1.0 - dense):
        ins = rng.choice(instructions)
    else:
        ins = None
    if ins is not None:
        if isinstance(ins, str):
            ins = {"text": ins, "position": "before"}
        text = str(ins["text"]).strip()
        if AUDIO_TOKEN in text:
            raise ValueError(f"instruction {text!r} must not contain {AUDIO_TOKEN}")
        position = ins.get("position", "before")
    parts = AudioMiniChatProcessor.audio_with_text(text, position)
    return AudioMiniChatProcessor.render_content(parts, AUDIO_TOKEN)


def _voices(cfg: dict):
    from .voices import Voice, check_training_voice, training_voices

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
            size = "" if meta.get("num", cfg["num"]) == cfg["num"] else f" of {meta['num']} utterances (this one asks for {cfg['num']})"
            raise RuntimeError(
                f"{out} holds a build{size} planned with another data config (plan key {meta.get('key')} != {key}); "
                "rerun with the same config and --num to resume it, or use another --out"
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
    atomic_write_text(meta_path, json.dumps({"key": key, "version": PLAN_VERSION, "num": cfg["num"], "rows": len(rows),
                                             "skipped": skipped}))
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return rows, skipped
