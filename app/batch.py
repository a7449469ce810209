"""What the command line needs to answer many files and to print while the model writes.

- :func:`expand_inputs`: the files a command line names (files as given; a folder's audio files, sorted);
- :class:`JsonlLog`: ``--jsonl OUT``, one JSON record per file appended as a whole line, and the files a
  previous run already answered (same path, mode and prompt), which a rerun skips;
- :class:`StreamPrinter`: the answer's pieces as they come, printed as the answer (no leading or trailing blanks);
- :func:`default_threads` / :func:`set_threads`: ``--threads``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..audio_io import AUDIO_EXTENSIONS, is_audio_file


def expand_inputs(inputs: list[str], recursive: bool = False, text_mode: bool = False) -> tuple[list[str], bool]:
    """The files to answer, in order, and whether a folder was among the inputs. A file is kept as given; a folder
    gives its audio files (``.txt`` files in text mode), sorted by path, its subfolders too when ``recursive``.
    A folder with none is a ValueError."""
    files, folder = [], False
    for item in inputs:
        path = Path(item)
        if not path.is_dir():
            files.append(item)
            continue
        folder = True
        walk = path.rglob("*") if recursive else path.iterdir()
        found = sorted(str(p) for p in walk if p.is_file() and (p.suffix.lower() == ".txt" if text_mode else is_audio_file(p)))
        if not found:
            kinds = ".txt files" if text_mode else "audio files (" + ", ".join(AUDIO_EXTENSIONS[:6]) + ", ...)"
            where = "in it or its subfolders" if recursive else "in it (--recursive looks in its subfolders too)"
            raise ValueError(f"AUDIO {item!r} is a folder with no {kinds} {where}")
        files += found
    return files, folder


def record_key(path: str, mode: str, prompt: str | None) -> tuple[str, str, str | None]:
    return os.path.abspath(path), mode, prompt


class JsonlLog:
    """``--jsonl OUT``: records of answered files, one JSON object a line.

    Each record is appended with one ``write`` of the whole line on a file opened for appending, then flushed and
    synced: a reader (or a rerun after a kill) sees whole lines; a line cut short by a crash is ignored when the log
    is read and the next record starts on a line of its own. A record with ``error: null`` marks its (path, mode,
    prompt) as done."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if self.path.is_dir():
            raise ValueError(f"--jsonl {str(self.path)!r} is a folder: give a file path (records are appended to it)")
        if not self.path.parent.is_dir():
            raise ValueError(f"--jsonl {str(self.path)!r}: folder {str(self.path.parent)!r} does not exist")
        self.done: set[tuple] = set()
        self.skipped_lines = 0
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    record = json.loads(line)
                    key = record_key(record["file"], record["mode"], record.get("prompt"))
                except (ValueError, KeyError, TypeError):
                    self.skipped_lines += bool(line.strip())
                    continue
                if record.get("error") is None:
                    self.done.add(key)

    def is_done(self, path: str, mode: str, prompt: str | None) -> bool:
        return record_key(path, mode, prompt) in self.done

    def append(self, record: dict) -> None:
        line = json.dumps(record, ensure_ascii=False) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            size = os.fstat(fd).st_size
            if size:  # a line cut short by a crash: start on a new line
                with open(self.path, "rb") as f:
                    f.seek(size - 1)
                    if f.read(1) != b"\n":
                        line = "\n" + line
            data = line.encode("utf-8")
            while data:  # one write for a line (a short write is finished, never interleaved by our own writes)
                data = data[os.write(fd, data):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if record.get("error") is None:
            self.done.add(record_key(record["file"], record["mode"], record.get("prompt")))


class StreamPrinter:
    """``on_text`` for a terminal: prints each piece as it comes, so that what is printed is exactly the stripped
    answer (blanks before it dropped, blanks at its end held back until more text follows), then a newline."""

    def __init__(self, stream=None, before=None):
        self.stream = stream or sys.stdout
        self.before = before  # () -> text printed once, before the first piece (a header line)
        self.started = False
        self.pending = ""

    def __call__(self, piece: str) -> None:
        if not self.started:
            piece = piece.lstrip()
            if not piece:
                return
            self.started = True
            if self.before is not None:
                self.stream.write(self.before())
        body = piece.rstrip()
        if body:
            self.stream.write(self.pending + body)
            self.stream.flush()
            self.pending = piece[len(body):]
        else:
            self.pending += piece

    def finish(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


def default_threads(cores: int | None = None, load: float | None = None) -> int:
    """The CPU threads torch gets unless ``--threads`` says: 1 where this process may run on 2 processors or fewer
    (``cores``); otherwise those idle now (their count less the 1-minute load average ``load``, rounded), at least 1.
    Measured on 2 cores: a second thread gained nothing when idle and made generation 2.4x slower with one core
    busy (docs/recordings.md, "Threads")."""
    if cores is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cores = os.cpu_count() or 1
    if cores <= 2:
        return 1
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = 0.0
    return max(1, min(cores, round(cores - load)))


def set_threads(threads: int) -> int:
    """torch's intra-op threads (and, while torch has not started its inter-op pool, the inter-op threads) to
    ``threads``; returns what torch reports."""
    import torch

    torch.set_num_threads(int(threads))
    try:
        torch.set_num_interop_threads(int(threads))
    except RuntimeError:  # settable once, before inter-op work starts: a second run in one process keeps it
        pass
    return torch.get_num_threads()


__all__ = ["expand_inputs", "JsonlLog", "StreamPrinter", "default_threads", "set_threads", "record_key"]
