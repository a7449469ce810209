"""Train from what is frozen, computed once: the front end's stage-1 features and the teacher's targets per row.

With a frozen encoder, a front end's stage 1 (``AudioFrontEnd.encoder_states``: encoder frames, pooled where the
pooling has no parameters) depends only on the audio, and the teacher (the frozen LLM on the transcript prompt)
only on the text. Both are computed once per row and stored beside the data; training then runs the trainable
stage and the student LLM only (``cached_distillation_step``).

Two caches, each keyed by everything it depends on (a changed model, data set, front end or loss setting gives a
new folder; nothing stale is read):

- ``features-<key>/``: per row the stage-1 tensor (native dtype) and the clip's sample count;
- ``teacher-<key>/``: per row, at each response position, the teacher's ``topk`` most probable tokens at the
  distillation temperature (probabilities and ids: with ``topk`` = the vocabulary the logit loss is the uncached
  one exactly, tested; below it the mass outside the top k is left out, reported as ``tail_mass`` in meta.json)
  and its hidden states at the feature-distillation layers.

Each cache is written in shards of ``shard_size`` rows (``shard-00003.safetensors``, atomically); a killed build
resumes at the first missing shard; ``meta.json`` is written last and marks the cache complete. Rows keep their
data set order, so a rebuild on a new machine writes the same cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..metrics.perplexity import response_mask
from ..utils.io import atomic_save_tensors, atomic_write_json
from .collator import DistillationCollator, decode_audio
from .trainable import AdaptersOff
from .config import DataConfig, LossConfig
from .losses import CACHED_PREFIX

CACHE_VERSION = 1


def _digest(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _data_identity(rows, data_dir: str, split: str) -> dict:
    """What a data split is: its folder, split, length and the arrow files' fingerprint."""
    return {"data": str(Path(data_dir).resolve()), "split": split, "rows": len(rows),
            "fingerprint": getattr(rows, "_fingerprint", None)}


def features_key(model, data_id: dict) -> str:
    fe = model.audio_frontend
    dtype = str(next(fe.encoder.parameters()).dtype)
    return _digest({"v": CACHE_VERSION, "data": data_id, "frontend": fe.name, "layout": fe.layout.to_dict(),
                    "frontend_config": model.config.frontend_config,
                    "model": getattr(model.config, "_name_or_path", None), "dtype": dtype,
                    "encoder": model.config.audio_config.to_dict()})


def teacher_key(model, data_id: dict, cfg: LossConfig, topk: int) -> str:
    dtype = str(next(model.language_model.parameters()).dtype)
    return _digest({"v": CACHE_VERSION, "data": data_id, "model": getattr(model.config, "_name_or_path", None),
                    "llm": model.config.text_config.to_dict(), "dtype": dtype, "temperature": cfg.temperature,
                    "feature_layers": list(cfg.feature_layers), "topk": topk})


def _shards(n: int, size: int) -> list[tuple[int, int]]:
    return [(s, min(s + size, n)) for s in range(0, n, size)]


def _offsets(counts: list[int]) -> torch.Tensor:
    return torch.tensor([0] + counts, dtype=torch.long).cumsum(0)


@torch.no_grad()
def _feature_shard(model, collator: DistillationCollator, rows: list[dict]) -> dict:
    fe, device = model.audio_frontend, next(model.parameters()).device
    proc, c, rate = collator.processor, collator.cfg, collator.processor.layout.sampling_rate
    feats, samples = [], []
    for row in rows:
        where = f"row {row.get('__index__', len(feats))}"
        clip = decode_audio(row[c.audio_column], where)
        spans = [collator.row_spans(row, where, clip.shape[0] / rate)] if proc.frontend.needs_spans else None
        batch = proc(text=[proc.build_prompt(row[c.prompt_column])], audio=[clip], sampling_rate=rate, audio_spans=spans)
        key = proc.audio_input_name
        per_clip = fe.encoder_states(batch[key].to(device), batch[f"{key}_mask"].to(device),
                                     batch["audio_window_clip"].to(device),
                                     None if spans is None else batch["audio_spans"].to(device))
        feats.append(per_clip[0].cpu())
        samples.append(int(clip.shape[0]))
    return {"features": torch.cat(feats), "offsets": _offsets([f.shape[0] for f in feats]),
            "num_samples": torch.tensor(samples, dtype=torch.long)}


@torch.no_grad()
def _teacher_shard(model, collator: DistillationCollator, rows: list[dict], cfg: LossConfig, topk: int) -> dict:
    llm, device = model.language_model, next(model.parameters()).device
    proc, c = collator.processor, collator.cfg
    probs, index, ids, counts, tails = [], [], [], [], []
    hidden = {layer: [] for layer in cfg.feature_layers}
    for row in rows:
        batch = proc(text=[proc.build_prompt(row[c.prompt_column], transcripts=[row[c.transcript_column]])],
                     responses=[row[c.response_column]], padding_side="right")
        labels = batch.pop("labels")
        positions = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        with AdaptersOff(llm):  # the teacher is the frozen LLM, as in the uncached step
            out = llm(**{k: v.to(device) for k, v in batch.items()}, position_ids=positions.to(device),
                      output_hidden_states=bool(cfg.feature_layers))
        mask = response_mask(labels).to(device)
        p = torch.softmax(out.logits[mask].float() / cfg.temperature, dim=-1)
        k = min(topk, p.shape[-1])
        values, idx = p.topk(k, dim=-1)
        probs.append(values.cpu())
        index.append(idx.to(torch.int32).cpu())
        tails.append(float((1 - values.sum(-1)).clamp(min=0).mean()))
        ids.append(labels[:, 1:][mask[:, :-1].cpu()].to(torch.int32))
        counts.append(int(mask.sum()))
        for layer in cfg.feature_layers:
            hidden[layer].append(out.hidden_states[layer][mask].cpu())
    shard = {"probs": torch.cat(probs), "index": torch.cat(index), "response_ids": torch.cat(ids),
             "offsets": _offsets(counts), "tail_mass": torch.tensor(tails)}
    shard.update({f"hidden.{layer}": torch.cat(h) for layer, h in hidden.items()})
    return shard


def build_cache(kind: str, model, collator: DistillationCollator, rows, folder: Path, shard_size: int = 250,
                cfg: LossConfig | None = None, topk: int = 64, describe: dict | None = None) -> Path:
    """Write (or finish) the ``kind`` cache ("features" or "teacher") of ``rows`` into ``folder``; returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "meta.json").is_file():
        return folder
    shards = _shards(len(rows), shard_size)
    start = time.perf_counter()
    for i, (a, b) in enumerate(shards):
        path = folder / f"shard-{i:05d}.safetensors"
        if path.is_file():
            continue
        chunk = [rows[j] for j in range(a, b)]
        shard = _feature_shard(model, collator, chunk) if kind == "features" else _teacher_shard(model, collator, chunk, cfg, topk)
        atomic_save_tensors({k: v.contiguous() for k, v in shard.items()}, path, {"rows": f"{a}:{b}"})
        done = b
        rate = done / max(time.perf_counter() - start, 1e-9)
        print(f"[cache] {kind}: {done}/{len(rows)} rows ({rate:.1f} rows/s)", file=sys.stderr, flush=True)
    meta = {"kind": kind, "rows": len(rows), "shard_size": shard_size, "version": CACHE_VERSION, **(describe or {})}
    if kind == "teacher":
        tails = torch.cat([load_file(str(folder / f"shard-{i:05d}.safetensors"))["tail_mass"] for i in range(len(shards))])
        meta.update(topk=topk, temperature=cfg.temperature, feature_layers=list(cfg.feature_layers),
                    tail_mass=round(float(tails.mean()), 6))
    atomic_write_json(folder / "meta.json", meta)
    return folder


def _load_shards(folder: Path) -> list[dict]:
    meta = json.loads((folder / "meta.json").read_text())
    n = len(_shards(meta["rows"], meta["shard_size"]))
    return [load_file(str(folder / f"shard-{i:05d}.safetensors")) for i in range(n)]


class CachedRows(torch.utils.data.Dataset):
    """A data split's text columns with each row's cached stage-1 features and teacher targets."""

    def __init__(self, rows, data_cfg: DataConfig, features: Path, teacher: Path):
        c = data_cfg
        self.text = [{k: rows[i][k] for k in (c.prompt_column, c.response_column)} for i in range(len(rows))]
        self.features, self.teacher = _load_shards(features), _load_shards(teacher)
        self.shard_size = json.loads((features / "meta.json").read_text())["shard_size"]
        self.layers = json.loads((teacher / "meta.json").read_text())["feature_layers"]

    def __len__(self) -> int:
        return len(self.text)

    def __getitem__(self, i: int) -> dict:
        s, j = divmod(int(i), self.shard_size)
        f, t = self.features[s], self.teacher[s]
        fa, fb = int(f["offsets"][j]), int(f["offsets"][j + 1])
        ta, tb = int(t["offsets"][j]), int(t["offsets"][j + 1])
        row = dict(self.text[i], __index__=int(i), features=f["features"][fa:fb], num_samples=int(f["num_samples"][j]),
                   probs=t["probs"][ta:tb], index=t["index"][ta:tb], response_ids=t["response_ids"][ta:tb])
        row.update({f"hidden.{layer}": t[f"hidden.{layer}"][ta:tb] for layer in self.layers})
        return row


class CachedCollator:
    """CachedRows -> the student's batch (prompt tokens with the clip's placeholder count), the padded stage-1
    states (``ENCODER_STATE_KEYS``, read by the training step, never by the model's ``forward``) and the teacher's
    cached targets (``cached_*``, padded per row to the longest response)."""

    def __init__(self, processor, data_cfg: DataConfig, feature_layers: list[int]):
        self.processor, self.cfg, self.layers = processor, data_cfg, list(feature_layers)

    def __call__(self, rows: list[dict]) -> dict:
        proc, c = self.processor, self.cfg
        batch = dict(proc(text=[proc.build_prompt(r[c.prompt_column]) for r in rows], responses=[r[c.response_column] for r in rows],
                          audio_num_samples=[r["num_samples"] for r in rows], padding_side="right"))
        pad = torch.nn.utils.rnn.pad_sequence
        batch["encoder_states"] = pad([r["features"] for r in rows], batch_first=True)
        batch["encoder_state_lengths"] = torch.tensor([r["features"].shape[0] for r in rows])
        batch["audio_num_samples"] = torch.tensor([r["num_samples"] for r in rows])
        batch[f"{CACHED_PREFIX}probs"] = pad([r["probs"] for r in rows], batch_first=True)
        batch[f"{CACHED_PREFIX}index"] = pad([r["index"].long() for r in rows], batch_first=True)
        batch[f"{CACHED_PREFIX}response_ids"] = pad([r["response_ids"].long() for r in rows], batch_first=True, padding_value=-1)
        batch[f"{CACHED_PREFIX}counts"] = torch.tensor([r["probs"].shape[0] for r in rows])
        for layer in self.layers:
            batch[f"{CACHED_PREFIX}hidden.{layer}"] = pad([r[f"hidden.{layer}"] for r in rows], batch_first=True)
        return batch


def prepare_cached_split(model, processor, rows, data_dir: str, split: str, data_cfg: DataConfig, cfg: LossConfig,
                         cache_dir: str, topk: int, shard_size: int = 250) -> CachedRows:
    """Build (or find) both caches of a split and return it as CachedRows."""
    if any(p.requires_grad for m in model.audio_frontend.stage1_modules() for p in m.parameters()):
        raise ValueError("training from cached features needs the front end's stage 1 frozen (trainable.encoder: frozen); "
                         "turn data.cache_dir off to adapt the encoder.")
    if not model.audio_frontend.cacheable:
        raise ValueError(f"audio_frontend={model.audio_frontend.name!r} has no cacheable stage; turn data.cache_dir off.")
    data_id = _data_identity(rows, data_dir, split)
    collator = DistillationCollator(processor, data_cfg)
    root = Path(os.path.expanduser(cache_dir))
    describe = {"data": data_id}
    features = build_cache("features", model, collator, rows, root / f"features-{features_key(model, data_id)}", shard_size,
                           describe=describe)
    teacher = build_cache("teacher", model, collator, rows, root / f"teacher-{teacher_key(model, data_id, cfg, topk)}", shard_size,
                          cfg=cfg, topk=topk, describe=describe)
    return CachedRows(rows, data_cfg, features, teacher)


__all__ = ["CachedCollator", "CachedRows", "build_cache", "prepare_cached_split", "CACHED_PREFIX"]
