"""Several processes on one batch (app/multiprocess.py): the parts of --jsonl OUT merged in the input order, and a
real two-process `accelerate launch` of the CLI on CPU (the offline default, cascade): one record per file, the
same answers as one process, a killed run resumed from OUT and a stale part, a rerun that answers nothing."""

from __future__ import annotations

import json
import re
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from audio_minichat.app.cli import main
from audio_minichat.app.multiprocess import launched_processes, merge_parts, part_path, part_paths

ROOT = Path(__file__).resolve().parents[1]
SHORT = ROOT / "examples" / "short.wav"


def _line(path, answer="x", error=None):
    return json.dumps({"file": os.path.abspath(path), "mode": "cascade", "prompt": "p", "answer": answer,
                       "model": "/m", "max_new_tokens": 4, "error": error})


def test_merge_parts_in_input_order(tmp_path):
    out = tmp_path / "out.jsonl"
    files = [str(tmp_path / f"{n}.wav") for n in "abcd"]
    out.write_text(_line(files[3], "old") + "\n" + '{"file": "cut sho')  # a line cut by a crash, kept as it was
    part_path(out, 1, 2).write_text(_line(files[2], "c") + "\n" + _line(files[0], "a") + "\n{\"fi")
    part_path(out, 0, 3).write_text(_line(tmp_path / "other.wav", "o") + "\n" + _line(files[1], "b", error="bad") + "\n")
    (tmp_path / "out.jsonl.partial").write_text("not a part")
    assert [p.name for p in part_paths(out)] == ["out.jsonl.part-0-of-3", "out.jsonl.part-1-of-2"]
    merged, missing = merge_parts(out, files)
    assert (merged, missing) == (4, 0)
    lines = out.read_text().splitlines()
    assert lines[:2] == [_line(files[3], "old"), '{"file": "cut sho']
    assert [json.loads(l)["answer"] for l in lines[2:]] == ["a", "b", "c", "o"]  # input order, other files last
    assert part_paths(out) == [] and (tmp_path / "out.jsonl.partial").exists()
    assert merge_parts(out, files + [str(tmp_path / "e.wav")]) == (0, 1)  # e.wav: no record anywhere


def test_json_with_several_processes_is_refused(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert launched_processes() == 2
    assert main(["summarize", str(SHORT), "--json"]) == 2
    assert capsys.readouterr().err == (
        "error: --json with 2 processes: each would print a list of its own files' answers; use --jsonl OUT (the "
        "processes' records are merged into OUT, in the input order)\n")


def _launch(tmp_path, out, clips):
    """`accelerate launch` of the CLI module with two CPU processes (without GPUs `--multi_gpu` starts torchrun;
    the processes wait for each other over gloo)."""
    with socket.socket() as sock:  # a free port for the rendezvous, so parallel runs don't collide
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", ACCELERATE_DISABLE_RICH="1")
    run = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
         "1", "--main_process_port", port, "--mixed_precision", "no", "--dynamo_backend", "no", "-m",
         "audio_minichat.app.cli", "summarize", str(clips), "--mode", "cascade", "--max-new-tokens", "4",
         "--jsonl", str(out)],
        capture_output=True, text=True, env=env, timeout=300, cwd=str(tmp_path))
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def _answered(stderr):
    """The clips the processes' progress lines name (two processes share stderr: lines may interleave)."""
    return sorted(re.findall(r"\] file \d+/\d+: \S*?(c\d\.wav)", stderr))


@pytest.mark.integration
def test_two_processes_merge_resume_and_skip(tmp_path, capsys):
    clips = tmp_path / "clips"
    clips.mkdir()
    audio, rate = sf.read(SHORT)
    for i in range(4):  # 2.5 s cuts of the example
        sf.write(clips / f"c{i}.wav", audio[int(3 * i * rate): int((3 * i + 2.5) * rate)], rate)
    one = tmp_path / "one.jsonl"
    assert main(["summarize", str(clips), "--mode", "cascade", "--max-new-tokens", "4", "--jsonl", str(one), "--quiet"]) == 0
    capsys.readouterr()
    expected = [json.loads(line) for line in one.read_text().splitlines()]
    assert [r["file"] for r in expected] == [str(clips / f"c{i}.wav") for i in range(4)]

    out = tmp_path / "two.jsonl"
    run = _launch(tmp_path, out, clips)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["file"], r["answer"]) for r in records] == [(r["file"], r["answer"]) for r in expected]
    assert all(r["threads"] == 1 and r["error"] is None for r in records)  # 2 cores, 2 processes: one thread each
    assert _answered(run.stderr) == ["c0.wav", "c1.wav", "c2.wav", "c3.wav"]  # each file by one process
    assert "process 1/2: 2 of the 4 file(s) to answer" in run.stderr and "process 2/2: 2 of the 4" in run.stderr
    assert "2 processes: 4 new record(s) merged into" in run.stderr and part_paths(out) == []

    # a killed run: c3 merged into OUT, c0 in a part of an earlier 3-process run that ended in a cut line
    lines = out.read_text().splitlines()
    out.write_text(lines[3] + "\n")
    part_path(out, 2, 3).write_text(lines[0] + "\n" + lines[1][:20])
    run = _launch(tmp_path, out, clips)
    assert _answered(run.stderr) == ["c1.wav", "c2.wav"]
    assert "(2 in " in run.stderr and "3 new record(s) merged" in run.stderr and part_paths(out) == []
    resumed = out.read_text().splitlines()
    assert resumed[:2] == [lines[3], lines[0]]  # OUT's line first, then the part's records in the input order
    by_file = {json.loads(line)["file"]: json.loads(line)["answer"] for line in resumed}
    assert len(resumed) == 4 and by_file == {r["file"]: r["answer"] for r in expected}

    run = _launch(tmp_path, out, clips)  # all done: nothing answered, OUT as it was
    assert _answered(run.stderr) == [] and "(4 in " in run.stderr
    assert out.read_text().splitlines() == resumed
