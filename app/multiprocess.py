"""Several processes answering one batch: ``accelerate launch ... summarize|ask|transcribe FOLDER --jsonl OUT``.

Under ``accelerate launch`` with more than one process (one machine or several), each process:

- reads which files are answered already (OUT and every part ``OUT.part-R-of-N``, whatever N the earlier run
  had) and, after all processes have read (a barrier), takes its share of the files still to answer
  (accelerate's ``PartialState.split_between_processes``: consecutive runs of the input order);
- appends its records to its own part ``OUT.part-R-of-N`` (R: its global rank), as a single run appends to OUT,
  so a killed run resumes where each process stopped;
- runs on its own device (``--device`` unset: ``cuda:LOCAL_RANK`` where CUDA is, else the CPU) with its own
  threads (``--threads`` unset: this machine's processors shared evenly among its processes).

When every process is done (a barrier), process 0 merges the parts into OUT (OUT's lines first, as they were,
then the new records in the input order; written beside OUT and swapped in) and removes them. OUT's folder must
be one every process sees (a shared filesystem across machines). Without ``--jsonl`` each process prints the
answers to its own files (whole, each under its file's header line); ``--json`` is refused (each process would
print a list of its own).
"""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta
from pathlib import Path

from .batch import JsonlError, JsonlLog, display_path

WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")  # torchrun, MPI
BARRIER_TIMEOUT = timedelta(days=7)  # a process with long recordings may finish hours after another


def launched_processes() -> int:
    """How many processes the launcher started (1 when not launched by accelerate / torchrun / MPI)."""
    for name in WORLD_SIZE_VARIABLES:
        try:
            size = int(os.environ.get(name, "") or 1)
        except ValueError:
            continue
        if size > 1:
            return size
    return 1


def part_path(out: str | os.PathLike, rank: int, size: int) -> Path:
    """Process ``rank``'s records of ``--jsonl OUT``: ``OUT.part-RANK-of-SIZE``."""
    return Path(f"{out}.part-{rank}-of-{size}")


def part_paths(out: str | os.PathLike) -> list[Path]:
    """The parts of OUT in its folder (of any run, whatever its number of processes), sorted by name."""
    out = Path(out)
    prefix = out.name + ".part-"
    try:
        names = os.listdir(out.parent)
    except OSError:
        return []
    return sorted(out.parent / n for n in names if n.startswith(prefix) and "-of-" in n[len(prefix):])


class PartLog(JsonlLog):
    """A process's ``--jsonl`` part: appended to as OUT is; its done jobs are also those of OUT and of every part."""

    def __init__(self, out: str | os.PathLike, rank: int, size: int):
        JsonlLog(out)  # OUT itself: a folder, a missing folder or a file that cannot be written is said at once
        super().__init__(part_path(out, rank, size))
        for other in [Path(out), *part_paths(out)]:
            if other != self.path and other.is_file():
                self.done |= JsonlLog(other).done


class Processes:
    """This process's place among those the launcher started, and what it does with the batch."""

    def __init__(self, args):
        from accelerate import PartialState

        # gloo on every machine: the processes only wait for each other, and that needs no GPU
        self.state = PartialState(cpu=True, backend="gloo", timeout=BARRIER_TIMEOUT)
        self.rank, self.size = self.state.process_index, self.state.num_processes
        self.local_rank = self.state.local_process_index
        self.local_size = int(os.environ.get("LOCAL_WORLD_SIZE", "") or self.size)
        self.out = args.jsonl
        if args.device is None:
            args.device = self.device()
        if args.threads is None:
            args.threads = self.threads()

    def device(self) -> str:
        import torch

        use_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
        if torch.cuda.is_available() and not use_cpu:
            return f"cuda:{self.local_rank % torch.cuda.device_count()}"
        return "cpu"

    def threads(self) -> int:
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cores = os.cpu_count() or 1
        return max(1, cores // self.local_size)

    def log(self) -> PartLog | None:
        return PartLog(self.out, self.rank, self.size) if self.out else None

    def share(self, files: list, is_done, quiet: bool = False) -> list:
        """This process's files: its share of those no process has answered (``is_done(file)``: in OUT or a part),
        after every process has read what is answered (so that all split the same list)."""
        todo = [f for f in files if not is_done(f)]
        self.state.wait_for_everyone()
        with self.state.split_between_processes(todo) as mine:
            mine = list(mine)
        if not quiet:
            skipped = f" ({len(files) - len(todo)} in {self.out} or its parts already: skipped)" if len(todo) < len(files) else ""
            print(f"[audio-minichat] process {self.rank + 1}/{self.size}: {len(mine)} of the {len(todo)} file(s) to "
                  f"answer{skipped}", file=sys.stderr, flush=True)
        return mine

    def finish(self, files: list[str], quiet: bool) -> None:
        """After every process is done: process 0 merges the parts into OUT; all return once it has."""
        self.state.wait_for_everyone()
        if self.rank == 0 and self.out:
            merged, missing = merge_parts(self.out, [f for f in files if f is not None])
            if not quiet:
                print(f"[audio-minichat] {self.size} processes: {merged} new record(s) merged into {self.out}",
                      file=sys.stderr, flush=True)
            if missing:
                print(f"warning: {missing} of {len(files)} file(s) have no record in {self.out}: is its folder on a "
                      f"filesystem that every process (every machine) shares?", file=sys.stderr, flush=True)
        self.state.wait_for_everyone()


def start(args, error=ValueError) -> Processes | None:
    """``args.device`` (and ``args.threads``) for this process; the :class:`Processes` when the launcher started
    several, else None (``--device`` unset: the CPU). ``--json`` with several processes is an ``error``."""
    if launched_processes() == 1:
        if args.device is None:
            args.device = "cpu"
        return None
    if args.json:
        raise error(f"--json with {launched_processes()} processes: each would print a list of its own files' answers; "
                    "use --jsonl OUT (the processes' records are merged into OUT, in the input order)")
    return Processes(args)


def merge_parts(out: str | os.PathLike, files: list[str]) -> tuple[int, int]:
    """OUT's lines as they are, then the records of every part in the order of ``files`` (records of other files
    after them, in part order), written beside OUT and swapped in; the parts are removed. Returns the records merged
    and how many of ``files`` have no record in OUT now."""
    from ..utils.io import atomic_write_text

    out = Path(out)
    try:
        text = out.read_text(encoding="utf-8", errors="surrogateescape") if out.is_file() else ""
    except OSError as exc:
        raise JsonlError(f"--jsonl {str(out)!r} cannot be read ({exc.strerror})") from None
    if text and not text.endswith("\n"):  # a line cut short by a crash: the records start on a line of their own
        text += "\n"
    order = {display_path(os.path.abspath(f)): i for i, f in enumerate(files)}
    parts, records = part_paths(out), []
    for part in parts:
        for line in part.read_text(encoding="utf-8", errors="surrogateescape").splitlines():
            try:
                record = json.loads(line)
                where = order.get(record["file"], len(order))
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a crash
            records.append((where, line))
    records.sort(key=lambda r: r[0])  # stable: a file's records keep their order
    merged = text + "".join(line + "\n" for _, line in records)
    atomic_write_text(out, merged)
    for part in parts:
        part.unlink()
    seen = set()
    for line in merged.splitlines():
        try:
            seen.add(json.loads(line)["file"])
        except (ValueError, KeyError, TypeError):
            continue
    return len(records), sum(1 for f in order if f not in seen)


__all__ = ["launched_processes", "start", "part_path", "part_paths", "PartLog", "Processes", "merge_parts"]
