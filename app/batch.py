"""What the command line needs to answer many files and to print while the model writes.

- :func:`expand_inputs`: the files a command line names (files as given; a folder's audio files, sorted);
- :class:`JsonlLog`: ``--jsonl OUT``, one JSON record per file appended as a whole line, and the files a
  previous run already answered with the same settings (path, mode, prompt, model and max_new_tokens), which a
  rerun skips;
- :func:`display_path`: a file name as text that can be printed and written to JSON (a name that is not UTF-8
  keeps its bytes as backslash escapes);
- :class:`StreamPrinter`: the answer's pieces as they come, printed as the answer (no leading or trailing blanks);
- :func:`default_threads` / :func:`set_threads`: ``--threads``.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from pathlib import Path


def expand_inputs(inputs: list[str], recursive: bool = False, text_mode: bool = False) -> tuple[list[str], bool]:
    """The files to answer, in order, and whether a folder was among the inputs. A file is kept as given; a folder
    gives its audio files (``.txt`` files in text mode), sorted by path, its subfolders too when ``recursive``.
    A folder with none is a ValueError."""
    from ..audio_io import AUDIO_EXTENSIONS, is_audio_file  # (numpy: not for --help)

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


def display_path(path: str | os.PathLike) -> str:
    """``path`` as printable, JSON-writable text: a name that is not UTF-8 (os.listdir gives its bytes as lone
    surrogates) keeps each such byte as a ``\\xNN`` escape."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def record_key(path: str, mode: str, prompt: str | None, model: str | None = None,
               max_new_tokens: int | None = None) -> tuple:
    """What makes two records the same job: the file (absolute), mode, prompt, model folder (absolute) and
    max_new_tokens (records of earlier versions have neither: None)."""
    return (display_path(os.path.abspath(path)), mode, prompt, None if model is None else display_path(os.path.abspath(model)),
            max_new_tokens)


class JsonlError(ValueError):
    """``--jsonl OUT`` cannot be read or written (one line naming OUT and why)."""


class JsonlLog:
    """``--jsonl OUT``: records of answered files, one JSON object a line.

    Each record is appended with one ``write`` of the whole line on a file opened for appending, then flushed and
    synced: a reader (or a rerun after a kill) sees whole lines; a line cut short by a crash is ignored when the log
    is read and the next record starts on a line of its own. A record with ``error: null`` marks its settings
    (:func:`record_key`: path, mode, prompt, model, max_new_tokens) as done: a rerun with other settings answers
    again. OUT is checked at once (a file that can be appended to, or a folder where a file can be created, probed with a
    file of another name so that runs sharing OUT never see it appear and vanish), so a run never learns after its
    first answer that it cannot record it."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if self.path.is_dir():
            raise JsonlError(f"--jsonl {str(self.path)!r} is a folder: give a file path (records are appended to it)")
        if not self.path.parent.is_dir():
            raise JsonlError(f"--jsonl {str(self.path)!r}: folder {str(self.path.parent)!r} does not exist")
        self._check_writable()
        self.done: set[tuple] = set()
        self.skipped_lines = 0
        if self.path.is_file():
            try:
                text = self.path.read_text(encoding="utf-8", errors="replace")
            except OSError as exc:
                raise JsonlError(f"--jsonl {str(self.path)!r} cannot be read ({exc.strerror})") from None
            for line in text.splitlines():
                try:
                    record = json.loads(line)
                    key = _key_of(record)
                except (ValueError, KeyError, TypeError):
                    self.skipped_lines += bool(line.strip())
                    continue
                if record.get("error") is None:
                    self.done.add(key)

    def _check_writable(self) -> None:
        # An existing OUT is opened for appending; a missing one is not created here: a file of another name is
        # created beside it and removed, so another run on the same OUT never sees OUT appear and vanish.
        if self.path.exists():
            target, flags = self.path, os.O_WRONLY | os.O_APPEND
        else:
            target = self.path.with_name(f".{self.path.name}.probe-{os.getpid()}-{threading.get_ident()}")
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        try:
            fd = os.open(target, flags, 0o666)
        except FileExistsError:  # a probe of ours left by a killed run: it shows the folder takes files
            return
        except OSError as exc:
            raise JsonlError(f"--jsonl {str(self.path)!r} cannot be written ({exc.strerror})") from None
        os.close(fd)
        if target != self.path:
            try:
                target.unlink()
            except OSError:
                pass

    def is_done(self, path: str, mode: str, prompt: str | None, model: str | None = None,
                max_new_tokens: int | None = None) -> bool:
        return record_key(path, mode, prompt, model, max_new_tokens) in self.done

    def append(self, record: dict) -> None:
        try:
            self._append(record)
        except OSError as exc:
            raise JsonlError(f"--jsonl {str(self.path)!r} cannot be written ({exc.strerror or exc}): stopped after the "
                             f"answers above") from None

    def _append(self, record: dict) -> None:
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
            self.done.add(_key_of(record))


def _key_of(record: dict) -> tuple:
    return record_key(record["file"], record["mode"], record.get("prompt"), record.get("model"), record.get("max_new_tokens"))


# A sentence ends at . ! ? or an ellipsis, with any closing quotes or brackets after it, before a blank or the end.
_SENTENCE_END = re.compile(r"[.!?\u2026]+[\"'\u2019\u201d)\]]*(?=\s|$)")


def trim_to_sentence(text: str) -> str:
    """``text`` up to the end of its last complete sentence (the whole text when it has none): what is shown of an
    answer that the token limit cut (``finish_reason == "length"``) unless ``--raw``."""
    text = text.rstrip()
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    return text[: ends[-1]] if ends else text


class StreamPrinter:
    """``on_text`` for a terminal: prints each piece as it comes, so that what is printed is exactly the stripped
    answer (blanks before it dropped, blanks at its end held back until more text follows), then a newline.

    ``trim=True`` (the CLI unless ``--raw``): what follows the last complete sentence is held back until the answer
    is finished; ``finish(cut=True)`` (the token limit cut it) then drops it where a complete sentence was
    printed, so that what is printed is :func:`trim_to_sentence` of the answer; otherwise it is printed."""

    def __init__(self, stream=None, before=None, trim: bool = False):
        self.stream = stream or sys.stdout
        self.before = before  # () -> text printed once, before the first piece (a header line)
        self.trim = trim
        self.started = False
        self.text = ""  # the answer so far, blanks before it dropped
        self.printed = 0  # how much of it is printed

    def _show(self, upto: int) -> None:
        if upto > self.printed:
            self.stream.write(self.text[self.printed : upto])
            self.stream.flush()
            self.printed = upto

    def __call__(self, piece: str) -> None:
        if not self.started:
            piece = piece.lstrip()
            if not piece:
                return
            self.started = True
            if self.before is not None:
                self.stream.write(self.before())
        self.text += piece
        if self.trim:  # up to the last sentence end followed by a blank (one at the very end may go on: "3." "5")
            ends = [m.end() for m in _SENTENCE_END.finditer(self.text) if m.end() < len(self.text)]
            self._show(ends[-1] if ends else 0)
        else:
            self._show(len(self.text.rstrip()))

    def finish(self, cut: bool = False) -> None:
        answer = self.text.rstrip()
        self._show(len(trim_to_sentence(answer) if cut and self.trim else answer))
        self.stream.write("\n")
        self.stream.flush()


def available_cores() -> int:
    """The processors this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_threads(cores: int | None = None, load: float | None = None) -> int:
    """The CPU threads torch gets unless ``--threads`` says: 1 where this process may run on 2 processors or fewer
    (``cores``); otherwise those idle now (their count less the 1-minute load average ``load``, rounded), at least 1.
    Measured on 2 cores: a second thread gained nothing when idle and made generation 2.4x slower with one core
    busy (docs/recordings.md, "Threads")."""
    if cores is None:
        cores = available_cores()
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


__all__ = ["expand_inputs", "JsonlLog", "JsonlError", "StreamPrinter", "default_threads", "set_threads", "record_key",
           "display_path", "trim_to_sentence"]
