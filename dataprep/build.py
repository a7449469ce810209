"""Build paired speech + transcript training data with teacher responses, offline, in resumable shards.

    python -m audio_minichat.dataprep --config configs/data_default.yaml [--out DIR] [--num N]
    python -m audio_minichat.dataprep --config configs/data_default.yaml \\
        --hf-dataset NAME_OR_PATH --audio-column audio --text-column text --split train

Output (``OUT``):

    OUT/plan.jsonl                 every planned row: id, split, source, transcript, prompt, voice (fixed once)
    OUT/shards/shard-XXXXX/synth/  stage 1: a ``datasets`` shard (audio, transcript, prompt, ...) + skipped.json
    OUT/shards/shard-XXXXX/spans/  with ``word_spans`` on: spans.jsonl (word spans per synthesized row) + meta.json
    OUT/shards/shard-XXXXX/teacher/ stage 2: responses.jsonl (teacher answer per surviving row) + skipped.json
    OUT/dataset_dict.json, OUT/train/, OUT/validation/   the final ``DatasetDict`` (``load_from_disk(OUT)``)
    OUT/report.json                counts per skip reason with examples, per-stage timings

Rows: ``audio`` (``Audio(sampling_rate=16000)``, 16 kHz PCM16 WAV bytes), ``transcript``, ``prompt`` (user
content with exactly one ``<|audio|>``), ``response`` (the frozen LLM's greedy answer to the prompt's text
version), ``source`` (text corpus or dataset), ``voice`` (``tts.Voice.id``: ``engine:name+variant@rate,pitch``),
``id`` and ``duration`` (seconds); with ``word_spans`` on (:mod:`.word_spans`), also ``word_spans``: the row's
``[start_s, end_s]`` word spans, what ``downsample="ctc_pool"`` models train on.

Resume: each shard stage is written to a temporary directory and ``os.replace``d into place, so a shard stage
exists completely or not at all; a rerun with the same ``OUT`` skips finished shard stages and redoes the rest.
The plan is written once (atomically) and reused, so row ids, voices, prompts and the split never change.
Bad rows (empty text, TTS failure, audio too long, undecodable audio, empty teacher answer) are skipped and
counted in ``report.json``; the build does not stop for them.

Measured on the project's 2-core CPU machine: see docs/training.md
and ``report.json["timings"]`` of a build.

Modules: :mod:`.config` (defaults, YAML), :mod:`.plan` (rows and prompts), :mod:`.shards` (atomic shard
stages), :mod:`.synthesis` (stage 1), :mod:`.teacher` (stage 2); this one assembles, reports and is the command
line (``python -m audio_minichat.dataprep`` runs it).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

from ..utils.io import atomic_write_text
from .config import load_config
from .plan import load_or_make_plan
from .shards import _clean_stale_tmp, _read_json, _shard_dir
from .synthesis import SAMPLE_RATE, run_synthesis
from .teacher import run_teacher
from .word_spans import COLUMN as SPANS_COLUMN
from .word_spans import read_word_spans, run_word_spans, span_config, word_spans_report


# ------------------------------------------------------------------------------------------------ assemble


def assemble(cfg: dict, out: Path, shards: list[list[dict]]):
    """Concatenate the finished shards into ``OUT`` as a DatasetDict (train/validation)."""
    from datasets import Audio, DatasetDict, List, Value, concatenate_datasets, load_from_disk

    with_spans = span_config(cfg.get("word_spans")) is not None
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
        if with_spans:
            spans = {rec["id"]: rec[SPANS_COLUMN] for rec in read_word_spans(out, k)}
            ds = ds.add_column(SPANS_COLUMN, [spans[rid] for rid in ds["id"]], feature=List(List(Value("float64"))))
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
        cols += [SPANS_COLUMN] if with_spans else []
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


def _report(out: Path, n_shards: int, plan_skipped: list, planned: int, dd, timings: dict,
            extra: Optional[dict] = None) -> dict:
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
           "audio_hours": round(seconds / 3600, 3), "timings": timings, **(extra or {})}
    atomic_write_text(out / "report.json", json.dumps(rep, indent=2, ensure_ascii=False))
    return rep


def build(cfg: dict) -> dict:
    out = Path(cfg["out"])
    out.mkdir(parents=True, exist_ok=True)
    _clean_stale_tmp(out)
    spans_on = span_config(cfg.get("word_spans")) is not None  # a bad word_spans config fails here, first
    t0 = time.perf_counter()
    rows, plan_skipped = load_or_make_plan(cfg, out)
    t_plan = time.perf_counter() - t0
    size = max(1, int(cfg["shard_size"]))
    shards = [rows[i:i + size] for i in range(0, len(rows), size)]
    t_synth = run_synthesis(cfg, out, rows, shards)
    t_spans = run_word_spans(cfg, out, shards)
    t_teacher, n_tokens = run_teacher(cfg, out, rows, shards)
    t1 = time.perf_counter()
    dd = assemble(cfg, out, shards)
    t_asm = time.perf_counter() - t1
    previous = _read_json(out / "report.json", {})
    timings = {"plan_s": round(t_plan, 1), "synthesis_s": round(t_synth, 1), "teacher_s": round(t_teacher, 1),
               "teacher_tokens": n_tokens, "assemble_s": round(t_asm, 1)}
    if spans_on:
        timings["word_spans_s"] = round(t_spans, 1)
    # a resumed build: each invocation did part of the work; the totals add up every invocation's
    total = dict(previous.get("timings_total") or {})
    for key, value in timings.items():
        total[key] = round(total.get(key, 0) + value, 1)
    extra = {"invocations": int(previous.get("invocations", 0)) + 1, "timings_total": total}
    if spans_on:
        kept = {rid for d in (dd or {}).values() for rid in d["id"]}
        extra["word_spans"] = word_spans_report(cfg, out, len(shards), kept)
    rep = _report(out, len(shards), plan_skipped, len(rows), dd, timings, extra)
    if dd is None:
        print(f"WARNING: no row survived; see {out / 'report.json'}", file=sys.stderr)
    print(json.dumps({k: rep[k] for k in ("rows", "skipped", "timings")}, default=str))
    return rep


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m audio_minichat.dataprep",
                                description="Build paired speech + text training data with teacher responses.")
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
    try:
        cfg = load_config(args.config, over)
        check_config(cfg)
        build(cfg)
    except (ValueError, TypeError, KeyError, RuntimeError, FileNotFoundError) as exc:
        print(f"error: {exc}".splitlines()[0], file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted (finished shards are kept: rerun the same command to resume)", file=sys.stderr)
        return 130
    return 0


def check_config(cfg: dict) -> None:
    """One clear error for a data config the build cannot use (before anything is planned)."""
    def number(key, kind, low, high=None, inclusive_high=True):
        value = cfg.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not float(value).is_integer()):
            raise ValueError(f"data config: {key!r} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
        if value < low or (high is not None and (value > high if inclusive_high else value >= high)):
            raise ValueError(f"data config: {key!r} = {value!r} is outside [{low}, {high if high is not None else 'inf'}"
                             f"{']' if inclusive_high else ')'}")

    number("num", int, 1)
    number("shard_size", int, 1)
    number("workers", int, 1)
    number("validation_fraction", float, 0.0, 1.0, inclusive_high=False)
    number("max_seconds", float, 0.1)
    if not cfg.get("out"):
        raise ValueError("data config: 'out' (the output directory) is missing")


if __name__ == "__main__":
    raise SystemExit(main())
