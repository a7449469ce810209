"""Atomic writes: the one implementation the package uses for files and directories.

A reader (or a process that resumes after a kill) sees either the old content or the new, never a half-written
file: everything is written beside its destination under a hidden temporary name and swapped in with
``os.replace``. Temporary leftovers of killed writers are hidden ``.<name>.<hex>.tmp*`` siblings that
:func:`remove_stale_temporaries` cleans up: a temporary directory holds its writer's process id (OWNER_FILE) while
it is written, so a leftover whose writer is no longer running goes at once and a live writer's is never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

TMP_TAG = ".tmp"
# Inside atomic_directory's temporary directory while it is written: {"pid", "host", "start"} of the writer (removed
# before the swap, so a finished directory never holds it).
OWNER_FILE = ".audio_minichat_writer.json"
# The temporary siblings of ``.<name>.<rest>`` that killed writers of ``name`` leave: atomic_directory's
# ``<hex8>.tmp<rand>`` and ``<hex8>.tmp-old`` (the old directory during the swap), atomic_write's ``<hex8>.tmp<suffix>``,
# and the names of earlier versions (``<hex6>.<rand>``, ``tmp-<rand>``).
_LEFTOVER_REST = re.compile(r"^(?:[0-9a-f]{6,8}\.[\w.-]+|tmp-\w+)$")


def _temporary_sibling(path: Path, suffix: str = "") -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}{TMP_TAG}{suffix}")


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _readable_mode(path: Path) -> None:
    """Temporary files are created private (0600); give them the usual umask mode."""
    os.chmod(path, 0o666 & ~_umask())


def share_modes(directory: str | os.PathLike) -> None:
    """Give a directory tree the modes of ordinary files under the umask (0644 / 0755 for umask 022).

    Writers that save atomically (safetensors) create their files 0600 and ``mkdtemp`` its folder 0700; a shared
    cache or a shipped checkpoint must be readable by everyone the umask allows.
    """
    umask, root = _umask(), Path(directory)
    os.chmod(root, 0o777 & ~umask)
    for base, dirs, files in os.walk(root):
        for entry in dirs:
            os.chmod(os.path.join(base, entry), 0o777 & ~umask)
        for entry in files:
            path = os.path.join(base, entry)
            if not os.path.islink(path):
                executable = os.stat(path).st_mode & 0o100
                os.chmod(path, (0o777 if executable else 0o666) & ~umask)


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
    temporary directory is removed on failure, and by :func:`remove_stale_temporaries` after a kill. What the block
    wrote gets ordinary modes (:func:`share_modes`) before the swap.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.{uuid.uuid4().hex[:8]}{TMP_TAG}", dir=final.parent))
    try:
        (tmp / OWNER_FILE).write_text(json.dumps(_this_process()), encoding="utf-8")
        yield tmp
        (tmp / OWNER_FILE).unlink(missing_ok=True)
        share_modes(tmp)
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


def _newest_mtime(path: Path) -> float:
    inside = [os.path.join(root, e) for root, dirs, files in os.walk(path) for e in dirs + files] if path.is_dir() else []
    return max([path.lstat().st_mtime, *(os.lstat(p).st_mtime for p in inside if os.path.lexists(p))])


def _start_time(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from /proc; None where there is no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _this_process() -> dict:
    import socket

    return {"pid": os.getpid(), "host": socket.gethostname(), "start": _start_time(os.getpid())}


def _writer_alive(leftover: Path) -> bool | None:
    """Whether the process that is writing the temporary directory ``leftover`` runs (True), is gone (False), or
    cannot be told (None: no owner file, another host's, an unreadable one)."""
    import socket

    try:
        owner = json.loads((leftover / OWNER_FILE).read_text(encoding="utf-8"))
        pid = int(owner["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if owner.get("host") != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        pass
    except OSError:
        return None
    start = _start_time(pid)
    return not (owner.get("start") and start and start != owner["start"])  # a new process with a recycled pid: gone


def remove_stale_temporaries(parent: str | os.PathLike, name: str, older_than: float = 0.0) -> int:
    """Remove the temporary siblings that killed atomic writers of ``parent/name`` left; returns how many.

    A temporary directory whose writer (its OWNER_FILE: process id, host, start time) no longer runs goes at once;
    one whose writer runs stays, however old. For the rest (no owner file: the old naming, a writer on another host,
    files) ``older_than`` decides: only leftovers in which nothing was written for that many seconds go, so that a
    directory shared with concurrent builders (the model cache) keeps a live build's own temporary directory. Best
    effort: what cannot be removed stays.
    """
    prefix, removed, now = f".{name}.", 0, time.time()
    try:
        entries = list(Path(parent).iterdir())
    except OSError:
        return 0
    for leftover in entries:
        if not leftover.name.startswith(prefix) or not _LEFTOVER_REST.match(leftover.name[len(prefix):]):
            continue
        try:
            alive = _writer_alive(leftover) if leftover.is_dir() and not leftover.is_symlink() else None
            if alive or (alive is None and older_than and now - _newest_mtime(leftover) < older_than):
                continue
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
        except OSError:
            continue
        removed += 1
    return removed


__all__ = ["atomic_write", "atomic_write_text", "atomic_write_json", "atomic_save_tensors", "atomic_directory",
           "remove_stale_temporaries", "share_modes", "OWNER_FILE"]


def default_cache_dir() -> Path:
    """``$AUDIO_MINICHAT_CACHE``, else ``~/.cache/audio_minichat``."""
    env = os.environ.get("AUDIO_MINICHAT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "audio_minichat"


def build_dir(variant: str = "default", untrained: bool = False, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where ``assets.default_build.build_default`` keeps a build variant: ``<cache>/audio-minichat-<variant>[-untrained]``."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    return cache / (f"audio-minichat-{variant}" + ("-untrained" if untrained else ""))
