"""``audio-minichat serve``: a local web page to try the model (gradio, the optional extra ``serve``).

    pip install "audio-minichat[serve]"
    audio-minichat serve [--host 127.0.0.1] [--port 7860] [--model DIR] [--threads N]

The page: upload or record audio (or paste text for ``text`` mode), choose the mode, the prompt (default: the
summary prompt) and chapters; the answer streams into its box as the LLM writes it; below it what the model heard
(``cascade``: Whisper's transcript; ``e2e``: the model's own reading of the speech, where its front end reads ASR
tokens), the chapters of a long recording (with chapters on) and the timings.

The model is loaded once, when the server starts; requests are answered one at a time (one model, one lock). The
page uses only :class:`SpeechLLM` and :func:`summarize_long`, so it answers exactly what ``audio-minichat
summarize`` answers for the same file, mode and prompt. gradio is imported only here, when the server starts:
the rest of the package (and the other commands) never imports it.
"""

from __future__ import annotations

import os
import queue
import signal
import sys
import textwrap
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

# (no torch: `serve --help` prints at once)
from .choices import DEFAULT_MODE, DEFAULT_MODEL_DTYPE, DEFAULT_SUMMARY_PROMPT, MODEL_DTYPES, MODES

if TYPE_CHECKING:
    from ..inference.speech_llm import Answer

SERVE_INSTALL_HINT = 'pip install "audio-minichat[serve]"'
MODE_HELP = {
    "e2e": "the speech itself through the model",
    "cascade": "Whisper's transcript, then the LLM",
    "text": "the text box below as the content",
}
TIMING_LABELS = {"speech_check_s": "speech check", "asr_s": "ASR", "generate_s": "generate", "combine_s": "combine"}


class ServeError(ValueError):
    """A problem starting the server (gradio missing, a taken port, a bad option): the CLI prints it as one line
    and exits with 2, as for every ValueError."""


def _step(message: str, quiet: bool) -> float:
    if not quiet:
        print(f"[audio-minichat] {message}", file=sys.stderr, flush=True)
    return time.perf_counter()


@dataclass
class PageState:
    """What the page shows at one moment of a request."""

    answer: str = ""
    heard: str = ""
    chapters: str = ""
    status: str = ""
    done: bool = False
    result: Answer | None = None
    pieces: list[str] = field(default_factory=list)

    def outputs(self) -> tuple[str, str, str, str]:
        return self.answer, self.heard, self.chapters, self.status


def _heard(answer: Answer, mode: str) -> str:
    if mode == "text":
        return ""
    if answer.transcript:
        return answer.transcript
    if mode == "e2e" and not answer.warning:
        return "(this model reads the speech without writing it down: no internal transcript to show)"
    return ""


def format_timings(answer: Answer, wall_s: float) -> str:
    """``audio 12.3 s · speech check 0.04 s · ASR 1.10 s · generate 2.31 s · total 3.52 s``."""
    parts = [] if answer.audio_seconds is None else [f"audio {answer.audio_seconds:.1f} s"]
    for key, value in answer.timings.items():
        parts.append(f"{TIMING_LABELS.get(key, key.removesuffix('_s').replace('_', ' '))} {value:.2f} s")
    parts.append(f"total {wall_s:.2f} s")
    return " · ".join(parts)


def stream_answer(llm, mode: str, audio=None, content: str | None = None, prompt: str | None = None,
                  chapters: bool = False, max_new_tokens: int = 128, lock: threading.Lock | None = None,
                  segment_seconds: float | None = None):
    """The page's request, as a generator of :class:`PageState`: ``summarize_long`` runs in a worker thread and
    its ``on_text`` pieces (the answer as it is written) and ``on_progress`` chapters come back through a queue;
    each yields the page's state (the chapters shown only with ``chapters`` on, as ``summarize --chapters``). The
    last state has ``done`` set and ``result`` the :class:`Answer` (None after an error, whose one line is the
    status). ``segment_seconds``: as ``summarize_long``'s (the page leaves it to the model's context)."""
    from ..inference.longform import format_chapters, summarize_long

    state = PageState()
    if mode not in MODES:
        state.status, state.done = f"error: mode must be one of {', '.join(MODES)}, got {mode!r}", True
        yield state
        return
    if mode == "text" and not (content or "").strip():
        state.status, state.done = "error: text mode answers the text box: paste the text to answer", True
        yield state
        return
    if mode != "text" and not audio:
        state.status, state.done = f"error: mode {mode} needs audio: upload a file or record from the microphone", True
        yield state
        return
    prompt = prompt if prompt and prompt.strip() else DEFAULT_SUMMARY_PROMPT
    events: queue.Queue = queue.Queue()
    lock = lock or threading.Lock()

    def work():
        try:
            with lock:  # one request at a time on the one model
                events.put(("start", None))
                answer = summarize_long(
                    llm, mode, audio=None if mode == "text" else audio, content=content if mode == "text" else None,
                    prompt=prompt, max_new_tokens=max_new_tokens, force_chapters=chapters,
                    segment_seconds=segment_seconds, on_progress=lambda i, n, chapter: events.put(("chapter", (i, n, chapter))),
                    on_text=lambda piece: events.put(("text", piece)))
            events.put(("done", answer))
        except Exception as exc:  # noqa: BLE001 - reported on the page as one line
            events.put(("error", exc))

    started = time.perf_counter()
    state.status = "waiting for the model (another request is running)..."
    threading.Thread(target=work, name="audio-minichat-answer", daemon=True).start()
    done_chapters: list[dict] = []
    while True:
        kind, value = events.get()
        if kind == "start":
            state.status = "listening..." if mode != "text" else "reading..."
        elif kind == "text":
            state.pieces.append(value)
            state.answer = "".join(state.pieces).strip()
            state.status = "answering..."
        elif kind == "chapter":
            index, total, chapter = value
            done_chapters.append(chapter)
            if chapters:
                state.chapters = format_chapters(done_chapters)
            state.status = f"segment {index}/{total} done ({time.perf_counter() - started:.1f} s)"
        elif kind == "error":
            state.status, state.done = f"error: {value}".splitlines()[0], True
            yield state
            return
        else:
            answer: Answer = value
            state.result, state.done, state.answer = answer, True, answer.text
            state.heard = _heard(answer, mode)
            if chapters and answer.chapters:
                state.chapters = format_chapters(answer.chapters)
            state.status = ("warning: " + answer.warning + "\n" if answer.warning else "") + \
                f"done: {format_timings(answer, time.perf_counter() - started)}"
            yield state
            return
        yield state


def _import_gradio():
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry, no version check: offline
    try:
        import gradio as gr
    except ImportError as exc:
        missing = exc.name or exc
        raise ServeError(f"serve needs gradio, which is not installed ({missing}): {SERVE_INSTALL_HINT}") from None
    return gr


def build_page(llm, model_name: str, default_mode: str = DEFAULT_MODE, max_new_tokens: int = 128):
    """The gradio page (``gr.Blocks``) over one loaded :class:`SpeechLLM`."""
    gr = _import_gradio()
    lock = threading.Lock()
    modes = "; ".join(f"**{m}**: {MODE_HELP[m]}" for m in MODES)

    def respond(audio, text_content, mode, prompt, chapters):
        for state in stream_answer(llm, mode, audio=audio, content=text_content, prompt=prompt, chapters=chapters,
                                   max_new_tokens=max_new_tokens, lock=lock):
            yield state.outputs()

    with gr.Blocks(title="audio-minichat", analytics_enabled=False) as page:
        gr.Markdown(f"## audio-minichat\nA frozen chat LLM prompted with speech. Model: `{model_name}`. "
                    f"Modes: {modes}.")
        with gr.Row():
            with gr.Column():
                audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Audio (upload or record)",
                                 elem_id="audio")
                text_content = gr.Textbox(label="Text (text mode)", lines=3, elem_id="text-content")
                mode = gr.Radio(list(MODES), value=default_mode, label="Mode", elem_id="mode")
                prompt = gr.Textbox(value=DEFAULT_SUMMARY_PROMPT, label="Prompt", elem_id="prompt")
                chapters = gr.Checkbox(value=False, label="Chapters (each segment's summary with its time range)",
                                       elem_id="chapters-on")
                submit = gr.Button("Answer", variant="primary", elem_id="submit")
            with gr.Column():
                answer = gr.Textbox(label="Answer", lines=6, max_lines=12, elem_id="answer")
                heard = gr.Textbox(label="What the model heard", lines=3, max_lines=6, elem_id="heard")
                chapter_box = gr.Textbox(label="Chapters", lines=2, max_lines=6, elem_id="chapters")
                status = gr.Textbox(label="Status and timings", lines=2, elem_id="status")
        submit.click(respond, [audio, text_content, mode, prompt, chapters], [answer, heard, chapter_box, status],
                     concurrency_limit=1)
    return page


def add_serve_parser(sub) -> None:
    """The ``serve`` subcommand's options (on the CLI's subparsers)."""
    s = sub.add_parser(
        "serve", help="a local web page: upload or record audio, see the answer stream in (needs the serve extra)",
        description=textwrap.fill(
            f"Start a local web page (gradio; install it with {SERVE_INSTALL_HINT}) over one model, loaded once: "
            "upload or record audio, choose the mode, prompt and chapters, and see the answer stream in, what the "
            "model heard and the timings.", width=100),
        epilog="example: audio-minichat serve --port 7860   (then open http://127.0.0.1:7860)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this machine only)")
    s.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    s.add_argument("--model", default=None, metavar="DIR",
                   help="AudioMiniChat checkpoint folder (default: the offline default, built on first use)")
    s.add_argument("--mode", default=DEFAULT_MODE, choices=MODES,
                   help="the page's preselected mode (default: %(default)s)")
    s.add_argument("--max-new-tokens", type=int, default=128, metavar="N",
                   help="the longest answer, in tokens (default: %(default)s)")
    s.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads for torch (default: the idle processors when the server starts, at least 1)")
    s.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default: %(default)s)")
    s.add_argument("--dtype", default=DEFAULT_MODEL_DTYPE, choices=MODEL_DTYPES,
                   help="how the model's weights are held (default: %(default)s: from the processor, as the other commands)")
    s.add_argument("--quiet", action="store_true", help="no progress messages on stderr (the URL is still printed)")
    s.add_argument("--no-speech-check", action="store_true", help="answer audio even when no speech is detected in it")


def _check_port(host: str, port: int) -> None:
    """One line when ``host:port`` cannot be listened on (taken by another server, or no such address here)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ServeError(f"--host {host!r} is not an address of this machine ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds it
        try:
            probe.bind(address)
        except OSError as exc:
            raise ServeError(f"cannot serve on {host}:{port} ({exc.strerror}): choose another --port") from None


def network_exposure(host: str, port: int) -> str | None:
    """The warning for a --host beyond this machine's loopback (0.0.0.0, a LAN address, a name that resolves to
    one): the page has no authentication, so anyone who reaches the address uses the model. None for loopback."""
    import ipaddress
    import socket

    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)}
    except socket.gaierror:
        return None  # (_check_port says what is wrong)
    if all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        return None
    return (f"--host {host} opens the page to the network: anyone who can reach this machine on port {port} can use "
            "it (the page has no authentication); --host 127.0.0.1 keeps it to this machine")


def serve(args, model_dir) -> int:
    """``audio-minichat serve``: load the model once, start the page, serve until interrupted (Ctrl-C or SIGTERM).
    ``model_dir()``: the checked checkpoint folder (the CLI's: ``--model`` or the offline default, built on first
    use), called after the options, the port and gradio are checked."""
    from ..inference.speech_llm import SpeechLLM, resolve_device
    from .batch import default_threads, set_threads

    if not 0 < args.port < 65536:
        raise ServeError(f"--port must be 1-65535, got {args.port}")
    if args.max_new_tokens < 1:
        raise ServeError("--max-new-tokens must be >= 1")
    if args.threads is not None and args.threads < 1:
        raise ServeError("--threads must be >= 1")
    _check_port(args.host, args.port)  # before the model loads: a taken port is one line at once
    exposed = network_exposure(args.host, args.port)
    if exposed is not None:  # (also with --quiet: a warning, not progress)
        print(f"warning: {exposed}", file=sys.stderr, flush=True)
    gr = _import_gradio()  # (as is a missing extra)
    resolve_device(args.device)
    threads = set_threads(args.threads or default_threads())
    t0 = _step(f"loading model ({threads} thread{'s' if threads > 1 else ''})...", args.quiet)
    model_dir = model_dir()
    llm = SpeechLLM(model_dir, device=args.device, dtype=args.dtype, check_speech=not args.no_speech_check)
    _step(f"model loaded ({time.perf_counter() - t0:.1f} s)", args.quiet)
    page = build_page(llm, os.path.basename(os.path.normpath(str(model_dir))), args.mode, args.max_new_tokens)
    def stop(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():  # before launch: the page answers before it returns
        signal.signal(signal.SIGTERM, stop)  # `kill PID` stops it as cleanly as Ctrl-C
        # Ctrl-C too where the server was started with SIGINT ignored (a background job of a script: `cmd &` without
        # job control), where Python leaves it ignored and `kill -INT` would do nothing
        signal.signal(signal.SIGINT, stop)
    try:
        page.queue(default_concurrency_limit=1).launch(server_name=args.host, server_port=args.port, quiet=True,
                                                       prevent_thread_lock=True, show_error=True,
                                                       theme=gr.themes.Default())
    except OSError as exc:
        why = str(exc).splitlines()[0]
        raise ServeError(f"cannot serve on {args.host}:{args.port} ({why}): choose another --port") from None
    except KeyboardInterrupt:  # stopped while it started
        page.close()
        _step("server stopped", args.quiet)
        return 0
    try:
        _step(f"serving on http://{args.host}:{args.port} (Ctrl-C stops)", False)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        page.close()
        _step("server stopped", args.quiet)
    return 0


__all__ = ["stream_answer", "build_page", "serve", "add_serve_parser", "network_exposure", "format_timings", "PageState", "ServeError",
           "SERVE_INSTALL_HINT"]
