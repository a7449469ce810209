"""audio-minichat on CPU beside the pipeline a user would build by hand (faster-whisper + llama.cpp on the same
weights: scripts/handbuilt_pipeline.py), each as a fresh process, as a user runs them (docs/cpu-speed.md).

    python scripts/bench_cpu.py --rounds 5 --threads 2 --max-new-tokens 128 \\
        --out-md benchmarks/cpu_speed.md --out-json benchmarks/cpu_speed.json

Commands (--commands, comma-separated; default all):
  handbuilt  python scripts/handbuilt_pipeline.py AUDIO --json
  cascade    audio-minichat summarize AUDIO --mode cascade --json --raw (--llm-backend auto: llama.cpp where
             llama-cpp-python is installed, inference/gguf_cascade.py)
  cascade-transformers   the same with --llm-backend transformers (torch; the reference)
  e2e        audio-minichat summarize AUDIO --mode e2e --json --raw (auto: llama.cpp and CTranslate2 where the
             checkpoint's e2e is the soft cascade, inference/ct2_soft_tokens.py)
  e2e-transformers       the same with --llm-backend transformers
  text       audio-minichat summarize --mode text --text TRANSCRIPT --json --raw, TRANSCRIPT being the one the cascade
             reads (`audio-minichat transcribe AUDIO`, run once per recording before the rounds, not timed)
  text-transformers      the same with --llm-backend transformers
  version    audio-minichat --version (the command line's start-up alone)
All with the same prompt, --max-new-tokens and --threads. Each round runs every command once, the order reversed
every other round (paired rounds: a machine that slows down during a round charges every command alike); --warmup
runs come first and are not counted. Per run: wall (perf_counter around the child, start to exit), CPU user + sys
and peak RSS (os.wait4's rusage of the child; ru_maxrss is KiB on Linux) and the child's own stage times from its
JSON. The report: medians per command, ratios to the hand-built pipeline (ratio of the medians; the JSON also holds
the median of the per-round ratios of wall), a markdown table (stdout, --out-md) and every run (--out-json).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from audio_minichat.utils.cpu_flags import backend_env

ROOT = Path(__file__).resolve().parents[1]
HANDBUILT = Path(__file__).resolve().parent / "handbuilt_pipeline.py"
COMMANDS = ("handbuilt", "cascade", "cascade-transformers", "e2e", "e2e-transformers", "text", "text-transformers", "version")
ANCHOR = "handbuilt"
NO_RATIO = ("version",)  # start-up alone: no pipeline to compare with the anchor's
VERSIONS = ("audio-minichat", "torch", "transformers", "faster-whisper", "ctranslate2", "llama-cpp-python")


def _handbuilt_module():
    """scripts/handbuilt_pipeline.py as a module (standard library only at import: nothing heavy is loaded)."""
    spec = importlib.util.spec_from_file_location("handbuilt_pipeline", HANDBUILT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- running one child -----------------------------------------------------------------------------------------
# The child is started by a small launcher, not by this process: Linux carries the resident set a process had when
# it called exec into the new program's ru_maxrss, and a child spawned straight from here would begin with this
# process's (the token counter's llama.cpp, a caller's torch). The launcher (python -S, a few MiB) spawns the
# command, waits for it with os.wait4 and writes its wall seconds and rusage as JSON to the file named first.
LAUNCHER = """import json, os, sys, time
start = time.perf_counter()
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - start
with open(sys.argv[1], "w") as out:
    json.dump({"wall_s": wall, "user_s": usage.ru_utime, "sys_s": usage.ru_stime, "maxrss_kib": usage.ru_maxrss,
               "returncode": os.waitstatus_to_exitcode(status)}, out)
"""


def measure(argv: list[str], timeout: float | None = None, env: dict | None = None) -> dict:
    """Run ``argv`` to its end: wall seconds (perf_counter from spawn to exit), CPU seconds (user, sys) and peak
    RSS (MiB) of the child from its rusage (os.wait4), its exit status, stdout and stderr."""
    with tempfile.TemporaryDirectory(prefix="bench_cpu-") as tmp:
        report, out_path, err_path = (os.path.join(tmp, n) for n in ("rusage.json", "stdout", "stderr"))
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen([sys.executable, "-S", "-c", LAUNCHER, report, *argv], stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=err, env=env, start_new_session=True)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)  # the launcher and the command (its own session)
                proc.wait()
        stdout = Path(out_path).read_bytes().decode("utf-8", "replace")
        stderr = Path(err_path).read_bytes().decode("utf-8", "replace")
        if not os.path.isfile(report):  # killed (timeout), or the command could not be started
            return {"wall_s": timeout or 0.0, "user_s": 0.0, "sys_s": 0.0, "cpu_s": 0.0, "peak_rss_mib": 0.0,
                    "returncode": proc.returncode if proc.returncode else -9, "stdout": stdout,
                    "stderr": stderr + (f"\ntimed out after {timeout} s" if proc.returncode == -9 else "")}
        usage = json.loads(Path(report).read_text())
    return {"wall_s": usage["wall_s"], "user_s": usage["user_s"], "sys_s": usage["sys_s"],
            "cpu_s": usage["user_s"] + usage["sys_s"], "peak_rss_mib": usage["maxrss_kib"] / 1024,  # KiB on Linux
            "returncode": usage["returncode"], "stdout": stdout, "stderr": stderr}


def parse_child_json(stdout: str) -> dict | None:
    """The last top-level JSON object a child printed (after its answer; indented or on one line), or None."""
    decoder = json.JSONDecoder()
    starts = [i for i in range(len(stdout)) if stdout[i] == "{" and (i == 0 or stdout[i - 1] == "\n")]
    for start in reversed(starts):
        try:
            value, end = decoder.raw_decode(stdout, start)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict) and not stdout[end:].strip():
            return value
    return None


def stage_times(record: dict | None) -> dict[str, float]:
    """The numeric per-stage seconds a child reports under ``timings`` (audio-minichat: load_s, speech_check_s,
    asr_s, generate_s, ...; the hand-built pipeline: import_s, whisper_load_s, asr_s, llm_load_s, llm_s, prefill_s,
    decode_s, total_s)."""
    timings = (record or {}).get("timings") or {}
    return {k: float(v) for k, v in timings.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


# ---- the plan --------------------------------------------------------------------------------------------------
def round_orders(commands: list[str], rounds: int) -> list[list[str]]:
    """Each round's order: as given in even rounds, reversed in odd ones."""
    return [list(commands) if r % 2 == 0 else list(reversed(commands)) for r in range(rounds)]


def audio_minichat_command() -> list[str]:
    """The installed console script beside this interpreter (not a shell shim in front of it), else the module."""
    script = Path(sys.executable).parent / "audio-minichat"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from audio_minichat.app.cli import main; sys.exit(main())"]


def command_line(name: str, audio: str, transcript: str | None, args) -> list[str]:
    common = ["--prompt", args.prompt, "--max-new-tokens", str(args.max_new_tokens), "--threads", str(args.threads)]
    cli = audio_minichat_command()
    if name == "handbuilt":
        return [sys.executable, str(HANDBUILT), audio, *common, "--json"]
    mode, _, backend = name.partition("-")
    route = ["--llm-backend", backend] if backend else []
    if mode in ("cascade", "e2e"):
        return [*cli, "summarize", audio, "--mode", mode, *common, *route, "--json", "--raw", "--quiet"]
    if mode == "text":
        return [*cli, "summarize", "--mode", "text", "--text", transcript, *common, *route, "--json", "--raw", "--quiet"]
    if name == "version":
        return [*cli, "--version"]
    raise ValueError(f"unknown command {name!r}: one of {', '.join(COMMANDS)}")


def run_one(name: str, audio: str, transcript: str | None, args, round_index: int, counter=None) -> dict:
    result = measure(command_line(name, audio, transcript, args), timeout=args.timeout)
    record = parse_child_json(result["stdout"]) if name != "version" else None
    run = {"command": name, "audio": audio, "round": round_index, **{k: result[k] for k in
           ("wall_s", "user_s", "sys_s", "cpu_s", "peak_rss_mib", "returncode")},
           "stages": stage_times(record)}
    if result["returncode"] != 0:
        lines = [line for line in result["stderr"].splitlines() if line.strip()]
        run["error"] = lines[-1] if lines else f"exit status {result['returncode']}"
    if record is not None:
        run["answer"] = record.get("answer")
        run["finish_reason"] = record.get("finish_reason")
        run["transcript"] = record.get("transcript")
        for key in ("completion_tokens", "prompt_tokens", "compute_type"):
            if key in record:
                run[key] = record[key]
        if counter is not None and run["answer"] is not None:
            run["answer_tokens"] = counter(run["answer"])
    elif name == "version":
        run["answer"] = result["stdout"].strip()
    return run


def token_counter():
    """Counts an answer's tokens with the GGUF's own vocabulary (llama.cpp, vocabulary only), the same for every
    command (audio-minichat's JSON does not carry the count); None without llama_cpp."""
    if importlib.util.find_spec("llama_cpp") is None:
        return None
    from llama_cpp import Llama

    sys.stderr.flush()
    saved = os.dup(2)
    try:  # llama.cpp writes a context warning to fd 2 even with verbose=False
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            vocab = Llama(model_path=_handbuilt_module().llm_file(), vocab_only=True, verbose=False)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    return lambda text: len(vocab.tokenize(text.encode("utf-8"), add_bos=False, special=False))


def project_transcript(audio: str, args) -> str:
    done = subprocess.run([*audio_minichat_command(), "transcribe", audio, "--threads", str(args.threads), "--quiet"],
                          capture_output=True, text=True, timeout=args.timeout)
    if done.returncode != 0 or not done.stdout.strip():
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise SystemExit(f"bench_cpu: audio-minichat transcribe {audio} failed: {lines[-1] if lines else done.returncode}")
    return done.stdout.strip()


# ---- the report ------------------------------------------------------------------------------------------------
def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(runs: list[dict], anchor: str = ANCHOR) -> dict:
    """Per recording, per command: medians of wall, CPU, peak RSS, the stage times and the answer's tokens over the
    successful runs, and the ratios to the anchor's medians (``x_<measure>``) and the median of the per-round
    ratios of wall (``paired_x_wall``)."""
    summary: dict = {}
    for audio in dict.fromkeys(r["audio"] for r in runs):
        here = [r for r in runs if r["audio"] == audio and not r.get("warmup")]
        rows: dict = {}
        for name in dict.fromkeys(r["command"] for r in here):
            ok = [r for r in here if r["command"] == name and r["returncode"] == 0]
            row = {"runs": len(ok), "failed": sum(1 for r in here if r["command"] == name and r["returncode"] != 0)}
            for key in ("wall_s", "cpu_s", "peak_rss_mib", "answer_tokens"):
                row[key] = _median([r.get(key) for r in ok])
            stages = dict.fromkeys(k for r in ok for k in r["stages"])
            row["stages"] = {k: _median([r["stages"].get(k) for r in ok]) for k in stages}
            rows[name] = row
        base = rows.get(anchor)
        for name, row in rows.items():
            comparable = base is not None and name not in NO_RATIO
            for key, ratio in (("wall_s", "x_wall"), ("cpu_s", "x_cpu"), ("peak_rss_mib", "x_rss")):
                row[ratio] = row[key] / base[key] if comparable and base[key] and row[key] is not None else None
            anchor_wall = {r["round"]: r["wall_s"] for r in here if r["command"] == anchor and r["returncode"] == 0}
            paired = [r["wall_s"] / anchor_wall[r["round"]] for r in here
                      if r["command"] == name and r["returncode"] == 0 and r["round"] in anchor_wall]
            row["paired_x_wall"] = _median(paired) if name not in NO_RATIO else None
        summary[audio] = rows
    return summary


def _fmt(value, digits: int = 2, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def markdown(summary: dict, meta: dict) -> str:
    lines = [f"CPU benchmark: {meta['rounds']} paired round(s), --threads {meta['threads']}, --max-new-tokens "
             f"{meta['max_new_tokens']}, {meta['cpus']} CPUs, load average {meta['load_before']} before / "
             f"{meta['load_after']} after. Medians; 'x' = ratio to the hand-built pipeline's median (< 1: faster / "
             "smaller than it).", ""]
    for audio, rows in summary.items():
        lines += [f"**{audio}**", "",
                  "| command | wall s | x | CPU s | x | peak RSS MiB | x | answer tokens | stages (median s) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, row in rows.items():
            stages = ", ".join(f"{k.removesuffix('_s')} {v:.2f}" for k, v in row["stages"].items() if v is not None)
            failed = f" ({row['failed']} failed)" if row["failed"] else ""
            lines.append(f"| {name}{failed} | {_fmt(row['wall_s'])} | {_fmt(row['x_wall'])} | {_fmt(row['cpu_s'])} | "
                         f"{_fmt(row['x_cpu'])} | {_fmt(row['peak_rss_mib'], 0)} | {_fmt(row['x_rss'])} | "
                         f"{_fmt(row['answer_tokens'], 0)} | {stages or '-'} |")
        lines.append("")
    return "\n".join(lines)


def versions() -> dict[str, str | None]:
    out = {}
    for name in VERSIONS:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


# ---- main --------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="audio-minichat beside faster-whisper + llama.cpp on CPU (docs/cpu-speed.md).")
    p.add_argument("--audio", nargs="+", default=[str(ROOT / "examples" / "news_2min.wav")],
                   help="recordings (default: examples/news_2min.wav)")
    p.add_argument("--commands", default=",".join(COMMANDS), help=f"comma-separated subset of {','.join(COMMANDS)}")
    p.add_argument("--rounds", type=int, default=5, help="paired rounds (default: 5)")
    p.add_argument("--warmup", type=int, default=1, help="uncounted rounds first (default: 1)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads of every command (default: 2)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="the longest answer (default: 128)")
    p.add_argument("--prompt", default=_handbuilt_module().DEFAULT_PROMPT, help="the instruction (default: the summary prompt)")
    p.add_argument("--timeout", type=float, default=900, help="seconds one run may take (default: 900)")
    p.add_argument("--out-md", help="write the markdown table here too")
    p.add_argument("--out-json", help="write the summary and every run here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = [c.strip() for c in args.commands.split(",") if c.strip()]
    unknown = [c for c in commands if c not in COMMANDS]
    if unknown or not commands:
        raise SystemExit(f"bench_cpu: unknown command(s) {', '.join(unknown) or '(none given)'}: choose from {', '.join(COMMANDS)}")
    if args.rounds < 1 or args.warmup < 0 or args.threads < 1 or args.max_new_tokens < 1:
        raise SystemExit("bench_cpu: --rounds, --threads and --max-new-tokens must be >= 1, --warmup >= 0")
    if ANCHOR in commands:
        handbuilt = _handbuilt_module()
        missing = handbuilt.missing_anchor_modules()
        if missing:
            names = ", ".join(f"{m} ({handbuilt.ANCHOR_MODULES[m]})" for m in missing)
            raise SystemExit(f"bench_cpu: the hand-built pipeline needs {names}, not installed: {handbuilt.INSTALL_HINT}")
    for audio in args.audio:
        if not os.path.isfile(audio):
            raise SystemExit(f"bench_cpu: no such audio file: {audio}")

    counter = token_counter()
    meta = {"rounds": args.rounds, "warmup": args.warmup, "threads": args.threads, "max_new_tokens": args.max_new_tokens,
            "prompt": args.prompt, "commands": commands, "cpus": os.cpu_count(), "load_before": _load(),
            "machine": platform.processor() or platform.machine(), "python": platform.python_version(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "versions": versions(),
            "backend_env": backend_env(),  # CTranslate2's kernels stood in for another CPU's (both pipelines' Whisper)
            "command_lines": {}}
    runs = []
    for audio in args.audio:
        transcript = project_transcript(audio, args) if any(c.startswith("text") for c in commands) else None
        meta["command_lines"][audio] = {c: command_line(c, audio, transcript, args) for c in commands}
        orders = [list(commands)] * args.warmup + round_orders(commands, args.rounds)
        for index, order in enumerate(orders):
            warm = index < args.warmup
            round_index = index - args.warmup
            for name in order:
                run = run_one(name, audio, transcript, args, round_index, counter)
                run["warmup"] = warm
                runs.append(run)
                status = "ok" if run["returncode"] == 0 else f"FAILED: {run.get('error')}"
                print(f"[bench_cpu] {Path(audio).name} {'warmup' if warm else f'round {round_index + 1}/{args.rounds}'} "
                      f"{name}: {run['wall_s']:.2f} s wall, {run['cpu_s']:.2f} s CPU, {run['peak_rss_mib']:.0f} MiB ({status})",
                      file=sys.stderr, flush=True)
    meta["load_after"] = _load()
    summary = summarize(runs)
    table = markdown(summary, meta)
    print(table)
    if args.out_md:
        Path(args.out_md).write_text(table + "\n", encoding="utf-8")
    if args.out_json:
        Path(args.out_json).write_text(json.dumps({"meta": meta, "summary": summary, "runs": runs}, indent=2) + "\n",
                                       encoding="utf-8")
    failed = [r for r in runs if r["returncode"] != 0]
    if failed:
        print(f"bench_cpu: {len(failed)} run(s) failed, first: {failed[0]['command']}: {failed[0].get('error')}", file=sys.stderr)
        return 1
    return 0


def _load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "?"


if __name__ == "__main__":
    raise SystemExit(main())
