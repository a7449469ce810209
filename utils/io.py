"""Atomic writes: the one implementation the package uses for files and directories.

A reader (or a process that resumes after a kill) sees either the old content or the new, never a half-written
file: everything is written beside its destination under a hidden temporary name and swapped in with
``os.replace``. Temporary leftovers of killed writers are hidden ``.<name>.<hex>.tmp*`` siblings that
:func:`remove_stale_temporaries` cleans up.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

TMP_TAG = ".tmp"


def _temporary_sibling(path: Path, suffix: str = "") -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}{TMP_TAG}{suffix}")


def _readable_mode(path: Path, directory: bool = False) -> None:
    """Temporary files and directories are created private (0600 / 0700); give them the usual umask mode."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if directory else 0o666) & ~umask)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], suffix: str = "") -> Path:
    """Call ``write(tmp)`` on a temporary sibling of ``path`` and move it into place; ``suffix`` keeps the
    extension writers infer the format from (e.g. ``".png"``)."""
    path = Path(path)
    tmp = _temporary_sibling(path, suffix)
    try:
        write(tmp)
        _readable_mode(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, obj, indent: int = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent))


def atomic_save_tensors(tensors: dict, path: str | os.PathLike, metadata: dict | None = None) -> Path:
    from safetensors.torch import save_file

    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike) -> Iterator[Path]:
    """Build a directory beside ``final`` and swap it in when the block succeeds.

    The old ``final`` (if any) stays complete until the swap: it is renamed aside, the new one renamed into
    place, then the old one removed. A failure (or a kill) inside the block leaves ``final`` untouched; the
    temporary directory is removed on failure, and by :func:`remove_stale_temporaries` after a kill.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.{uuid.uuid4().hex[:8]}{TMP_TAG}", dir=final.parent))
    _readable_mode(tmp, directory=True)
    try:
        yield tmp
        stale = None
        if final.exists():
            stale = _temporary_sibling(final, "-old")
            os.replace(final, stale)
        os.replace(tmp, final)
        if stale is not None:
            shutil.rmtree(stale, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_temporaries(parent: str | os.PathLike, name: str) -> int:
    """Remove temporary siblings of ``parent/name`` left by killed atomic writers; returns how many."""
    parent = Path(parent)
    if not parent.is_dir():
        return 0
    removed = 0
    for leftover in parent.glob(f".{name}.*{TMP_TAG}*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
        removed += 1
    return removed


__all__ = ["atomic_write", "atomic_write_text", "atomic_write_json", "atomic_save_tensors", "atomic_directory",
           "remove_stale_temporaries"]
