"""Shard stages of a data build, ``OUT/shards/shard-XXXXX/<stage>/``: each is built beside its place and
swapped in (:func:`audio_minichat.utils.io.atomic_directory`), so it exists completely or not at all and a
rerun skips finished ones.  ``AUDIO_MINICHAT_PREPARE_KILL`` is the tests' hook to kill a build mid-way."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

from ..utils.io import atomic_directory, remove_stale_temporaries

KILL_ENV = "AUDIO_MINICHAT_PREPARE_KILL"  # test hook: "after:N" or "before-commit:N" -> os._exit(17)
STAGES = ("synth", "spans", "teacher")
# files of OUT written with utils.io's atomic writes
_ATOMIC_FILES = ("plan.jsonl", "plan_meta.json", "report.json")

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


@contextlib.contextmanager
def shard_stage(shard: Path, stage: str) -> Iterator[Path]:
    """Fill the yielded temporary directory; on success it becomes ``shard/stage`` (atomic: the stage exists
    complete or not at all)."""
    global _COMMITS
    with atomic_directory(shard / stage) as tmp:
        yield tmp
        _kill_hook("before-commit")
    _COMMITS += 1
    _kill_hook("after")


def _clean_stale_tmp(root: Path) -> int:
    """Remove what killed writers left in ``root``: temporary shard stages and files, and the assembly's
    temporary directory (and stage directories named the way builds before utils.io named them)."""
    n = sum(remove_stale_temporaries(shard, stage) for shard in root.glob("shards/shard-*") for stage in STAGES)
    n += sum(remove_stale_temporaries(root, name) for name in _ATOMIC_FILES)
    for p in list(root.glob(".final.tmp-*")) + list(root.glob("shards/*/.*.tmp-*")):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
            n += 1
    return n


def _shard_dir(out: Path, k: int) -> Path:
    return out / "shards" / f"shard-{k:05d}"


def _read_json(path: Path, default):
    return json.loads(path.read_text()) if path.exists() else default
