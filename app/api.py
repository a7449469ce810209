"""``audio-minichat api``: an OpenAI-compatible HTTP server over one model (standard library only).

    audio-minichat api [--host 127.0.0.1] [--port 8000] [--api-key KEY] [--max-upload-mb 25] [--max-queue 16]

Endpoints: ``GET /v1/models``; ``POST /v1/chat/completions`` (text and ``input_audio`` parts, ``stream``,
``max_tokens`` / ``max_completion_tokens``, ``temperature``; the mode chosen by the model name); ``POST
/v1/audio/transcriptions`` (multipart ``file``; ``response_format`` json, text, srt, vtt, verbose_json). Errors are
OpenAI's JSON with the status that fits (400, 401, 404, 413, 503; 500 for a fault of ours, one line, never a
traceback).

The model is loaded once. HTTP requests are read and parsed in their own threads (``ThreadingHTTPServer``), but
everything that runs torch (audio decoding included) is a job in ONE queue served by ONE worker thread: the CPU
threads are never oversubscribed, and a greedy answer is the same whatever else is queued. A request that finds
``--max-queue`` jobs waiting gets 503 at once.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import os
import queue
import signal
import socket
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .api_protocol import (
    DONE_EVENT,
    TRANSCRIPTION_FORMATS,
    ApiError,
    TextTrimmer,
    chunk_event,
    completion_body,
    completion_id,
    model_mode,
    models_body,
    parse_chat,
    parse_multipart,
    usage_body,
    verbose_transcription,
)


class Job:
    """One unit of model work: ``fn(emit)`` runs on the worker; ``emit(kind, value)`` events (and the final
    ``("done", result)`` or ``("error", exc)``) come back through ``events``."""

    def __init__(self, fn):
        self.fn, self.events, self.cancelled = fn, queue.Queue(), False
        self.started = threading.Event()

    def run(self) -> None:
        self.started.set()
        if self.cancelled:  # its client went away while it waited
            return
        try:
            self.events.put(("done", self.fn(lambda kind, value: self.events.put((kind, value)))))
        except Exception as exc:  # noqa: BLE001 - handed to the request's thread, answered as one line
            self.events.put(("error", exc))

    def result(self):
        while True:
            kind, value = self.events.get()
            if kind == "done":
                return value
            if kind == "error":
                raise value


class ModelWorker:
    """The one thread that runs the model, and the bounded queue of jobs waiting for it."""

    def __init__(self, max_queue: int):
        self.jobs: queue.Queue = queue.Queue(maxsize=max_queue)
        self.max_queue = max_queue
        self.thread = threading.Thread(target=self._loop, name="audio-minichat-api-worker", daemon=True)
        self.thread.start()

    def submit(self, fn) -> Job:
        job = Job(fn)
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            raise ApiError(503, f"the server is busy: {self.max_queue} requests are already waiting for the model; "
                           "retry later", code="queue_full") from None
        return job

    def _loop(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            job.run()

    def stop(self) -> None:
        with contextlib.suppress(queue.Full):
            self.jobs.put_nowait(None)


@contextlib.contextmanager
def _generation(llm, temperature: float, top_p: float):
    """Within the block, the LLM's ``generate`` samples at ``temperature`` (0: greedy) and the prompt and answer
    tokens of every call are counted (``stats``). Used on the worker thread only, one request at a time."""
    model, stats = llm.model, {"prompt_tokens": 0, "completion_tokens": 0}
    original = model.generate
    eos = model.generation_config.eos_token_id
    eos = {int(t) for t in (eos if isinstance(eos, (list, tuple)) else [eos]) if t is not None}

    def generate(*args, **kwargs):
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
        else:
            kwargs.update(do_sample=False)
        out = original(*args, **kwargs)
        sequences = out.sequences if hasattr(out, "sequences") else out
        prompt = int(kwargs["input_ids"].shape[1]) if kwargs.get("input_ids") is not None else 0
        new = [int(t) for t in sequences[0, prompt:].tolist()]
        ends = [i for i, t in enumerate(new) if t in eos]
        stats["prompt_tokens"] += prompt
        stats["completion_tokens"] += ends[0] if ends else len(new)  # the end-of-sequence token not counted
        return out

    model.generate = generate
    try:
        yield stats
    finally:
        del model.generate  # the class's own again


class ApiServer:
    """The HTTP server, the model and its worker."""

    def __init__(self, llm, host: str = "127.0.0.1", port: int = 0, api_key: str | None = None,
                 max_upload_mb: float = 25.0, max_queue: int = 16, default_mode: str = "cascade",
                 default_max_tokens: int = 128, quiet: bool = True):
        self.llm, self.api_key, self.default_mode, self.quiet = llm, api_key, default_mode, quiet
        self.max_upload = int(max_upload_mb * 1_000_000)
        self.default_max_tokens, self.created = default_max_tokens, int(time.time())
        self.worker = ModelWorker(max_queue)
        self.httpd = ThreadingHTTPServer((host, port), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.api = self
        self.host, self.port = host, self.httpd.server_address[1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    def start(self) -> "ApiServer":
        """Serve in a background thread (tests, scripts); :meth:`serve_forever` serves in this one."""
        threading.Thread(target=self.httpd.serve_forever, name="audio-minichat-api-http", daemon=True).start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.worker.stop()

    def log(self, line: str) -> None:
        if not self.quiet:
            print(f"[audio-minichat] {line}", file=sys.stderr, flush=True)

    # ---- the model's work (on the worker thread) ----------------------------------------------------------
    def decode_audio(self, data: bytes, suffix: str, where: str):
        """16 kHz mono float32 of uploaded audio bytes, or ApiError(400) saying why not."""
        from ..audio_io import load_audio

        with tempfile.TemporaryDirectory(prefix="audio-minichat-api-") as tmp:
            path = os.path.join(tmp, "upload" + suffix)
            with open(path, "wb") as fh:
                fh.write(data)
            try:
                return load_audio(path, target_rate=self.llm.processor.layout.sampling_rate, name=where)
            except ValueError as exc:
                message = str(exc).splitlines()[0].removeprefix(f"{where}: ").replace(repr(path), "the upload")
                raise ApiError(400, f"{where}: {message}", param=where, code="invalid_audio") from None

    def answer_chat(self, request, emit) -> dict:
        from ..inference.longform import summarize_long

        trimmer = TextTrimmer()

        def on_text(piece):
            piece = trimmer.feed(piece)
            if piece:
                emit("text", piece)

        with _generation(self.llm, request.temperature, request.top_p) as stats:
            if request.audio is None:
                answer = summarize_long(self.llm, "text", content=request.prompt, max_new_tokens=request.max_tokens,
                                        on_text=on_text)
            else:
                clip = self.decode_audio(request.audio, "." + request.audio_format, "input_audio")
                answer = summarize_long(self.llm, request.mode, audio=clip,
                                        sampling_rate=self.llm.processor.layout.sampling_rate, prompt=request.prompt,
                                        text_position=request.text_position, max_new_tokens=request.max_tokens,
                                        on_text=on_text)
        finish = getattr(answer, "finish_reason", None) or "stop"
        return {"text": answer.text, "finish_reason": finish, "usage": usage_body(stats["prompt_tokens"], stats["completion_tokens"]),
                "extra": {"mode": answer.mode, "transcript": answer.transcript, "warning": answer.warning,
                          "audio_seconds": answer.audio_seconds, "timings": answer.timings}}

    def transcribe(self, data: bytes, suffix: str, fmt: str) -> dict:
        clip = self.decode_audio(data, suffix, "file")
        rate = self.llm.processor.layout.sampling_rate
        if fmt in ("json", "text"):
            answer = self.llm.transcribe(clip, sampling_rate=rate)
            return {"text": answer.text, "segments": None, "seconds": answer.audio_seconds}
        from ..inference.subtitles import transcribe_segments

        answer, segments = transcribe_segments(self.llm, clip, sampling_rate=rate)
        return {"text": answer.text, "segments": segments, "seconds": answer.audio_seconds}


def _error_line(exc: Exception) -> ApiError:
    """Any failure of a job as an ApiError: the model's ValueErrors (a prompt over the context, unreadable audio)
    are the request's fault (400); anything else is ours (500), one line."""
    if isinstance(exc, ApiError):
        return exc
    line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, ValueError):
        return ApiError(400, line)
    return ApiError(500, f"internal error: {type(exc).__name__}: {line}")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "audio-minichat-api"

    @property
    def api(self) -> ApiServer:
        return self.server.api

    def log_message(self, fmt, *args):  # one line per request through ApiServer.log (quiet by default in tests)
        self.api.log(f"{self.address_string()} {fmt % args}")

    # ---- plumbing -------------------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj) -> None:
        self._send(status, json.dumps(obj, ensure_ascii=False).encode("utf-8"), "application/json")

    def _error(self, error: ApiError) -> None:
        self._json(error.status, error.body())

    def _body(self, limit: int) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.close_connection = True
            raise ApiError(411, "a request body needs a Content-Length header")
        length = int(length)
        if length > limit:
            self.close_connection = True  # the unread body would be taken for the next request
            with contextlib.suppress(OSError):  # drain what is cheap to drain, so the client reads the answer
                left = min(length, 4 * limit + (1 << 20))
                while left > 0 and (chunk := self.rfile.read(min(left, 1 << 16))):
                    left -= len(chunk)
            raise ApiError(413, f"the request is {length / 1e6:.1f} MB, over the upload limit of "
                           f"{self.api.max_upload / 1e6:g} MB (--max-upload-mb)", code="upload_too_large")
        return self.rfile.read(length)

    def _authorize(self) -> None:
        if self.api.api_key is None:
            return
        given = self.headers.get("Authorization", "")
        token = given[7:].strip() if given.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(token.encode(), self.api.api_key.encode()):
            raise ApiError(401, "Incorrect API key provided: send 'Authorization: Bearer <the server's --api-key>'",
                           code="invalid_api_key")

    def _route(self, method: str) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        routes = {"/v1/models": ("GET", self._models), "/v1/chat/completions": ("POST", self._chat),
                  "/v1/audio/transcriptions": ("POST", self._transcriptions)}
        try:
            if path not in routes:
                raise ApiError(404, f"no such endpoint: {method} {self.path} (the endpoints are GET /v1/models, "
                               "POST /v1/chat/completions, POST /v1/audio/transcriptions)", code="unknown_url")
            self._authorize()
            if routes[path][0] != method:
                raise ApiError(405, f"{path} takes {routes[path][0]}, not {method}")
            routes[path][1]()
        except ApiError as error:
            self._error(error)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # noqa: BLE001 - never a traceback to the client
            self._error(_error_line(exc))

    def do_GET(self):
        self._route("GET")

    def do_POST(self):
        self._route("POST")

    # ---- endpoints ------------------------------------------------------------------------------------------
    def _models(self) -> None:
        self._json(200, models_body(self.api.created))

    def _chat(self) -> None:
        api = self.api
        raw = self._body(api.max_upload * 4 // 3 + (1 << 20))  # base64 audio in JSON
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            raise ApiError(400, "the request body is not valid JSON") from None
        request = parse_chat(body, api.default_mode, api.default_max_tokens, api.max_upload)
        job = api.worker.submit(lambda emit: api.answer_chat(request, emit))
        cid = completion_id()
        if not request.stream:
            try:
                result = job.result()
            except Exception as exc:  # noqa: BLE001
                raise _error_line(exc) from None
            self._json(200, completion_body(cid, request.model, result["text"], result["finish_reason"], result["usage"],
                                            result["extra"]))
            return
        self._stream(job, cid, request)

    def _stream(self, job: Job, cid: str, request) -> None:
        """Server-sent events: the role, the answer's pieces as they are written, the finish reason, the usage
        (with stream_options.include_usage), ``[DONE]``. An error after the stream started is one error event."""
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        write = lambda data: (self.wfile.write(data), self.wfile.flush())  # noqa: E731
        try:
            write(chunk_event(cid, request.model, {"role": "assistant", "content": ""}))
            while True:
                kind, value = job.events.get()
                if kind == "text":
                    write(chunk_event(cid, request.model, {"content": value}))
                elif kind == "error":
                    write(b"data: " + json.dumps(_error_line(value).body()).encode() + b"\n\n")
                    break
                elif kind == "done":
                    write(chunk_event(cid, request.model, {}, value["finish_reason"]))
                    if request.include_usage:
                        write(chunk_event(cid, request.model, None, usage=value["usage"]))
                    break
            write(DONE_EVENT)
        except (BrokenPipeError, ConnectionResetError):
            job.cancelled = True  # (a job already running finishes; one still waiting is skipped)

    def _transcriptions(self) -> None:
        api = self.api
        fields = parse_multipart(self.headers.get("Content-Type", ""), self._body(api.max_upload + (1 << 20)))
        upload = fields.get("file")
        if not isinstance(upload, tuple):
            raise ApiError(400, "the form has no file field with the audio", param="file")
        filename, data = upload
        if not data:
            raise ApiError(400, f"the file {filename!r} is empty: no audio", param="file", code="invalid_audio")
        if len(data) > api.max_upload:
            raise ApiError(413, f"the file is {len(data) / 1e6:.1f} MB, over the upload limit of "
                           f"{api.max_upload / 1e6:g} MB (--max-upload-mb)", param="file", code="upload_too_large")
        model_mode(fields.get("model"), api.default_mode, "transcription")
        fmt = fields.get("response_format", "json") or "json"
        if fmt not in TRANSCRIPTION_FORMATS:
            raise ApiError(400, f"response_format must be one of {', '.join(TRANSCRIPTION_FORMATS)}, got {fmt!r}",
                           param="response_format")
        suffix = os.path.splitext(filename or "")[1].lower()
        job = api.worker.submit(lambda emit: api.transcribe(data, suffix, fmt))
        try:
            result = job.result()
        except Exception as exc:  # noqa: BLE001
            raise _error_line(exc) from None
        from ..inference.subtitles import format_srt, format_vtt

        if fmt == "json":
            self._json(200, {"text": result["text"]})
        elif fmt == "verbose_json":
            self._json(200, verbose_transcription(result["text"], result["segments"], result["seconds"]))
        elif fmt == "text":
            self._send(200, (result["text"] + "\n").encode("utf-8"), "text/plain; charset=utf-8")
        else:
            text = format_srt(result["segments"]) if fmt == "srt" else format_vtt(result["segments"])
            self._send(200, text.encode("utf-8"), "text/plain; charset=utf-8")


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host).is_loopback
    with contextlib.suppress(OSError):
        return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
    return False


def serve_api(args, model_dir) -> str:
    """``audio-minichat api``: load the model, serve until Ctrl-C / SIGTERM; returns the URL it served."""
    from ..inference.speech_llm import DEFAULT_MODE, SpeechLLM, resolve_device
    from .batch import default_threads, set_threads

    for name, value, low in (("--max-queue", args.max_queue, 1), ("--max-tokens", args.max_tokens, 1),
                             ("--threads", args.threads or 1, 1), ("--port", args.port, 0)):
        if value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")
    if not args.max_upload_mb > 0:
        raise ValueError(f"--max-upload-mb must be > 0, got {args.max_upload_mb}")
    api_key = args.api_key or os.environ.get("AUDIO_MINICHAT_API_KEY") or None
    resolve_device(args.device)
    threads = set_threads(args.threads or default_threads())
    started = time.perf_counter()
    path = model_dir()
    llm = SpeechLLM(path, device=args.device, dtype=args.dtype, check_speech=not args.no_speech_check)
    try:
        server = ApiServer(llm, args.host, args.port, api_key, args.max_upload_mb, args.max_queue, DEFAULT_MODE,
                           args.max_tokens, quiet=args.quiet)
    except OSError as exc:
        raise ValueError(f"cannot serve on {args.host}:{args.port} ({exc.strerror or exc})") from None
    if not is_loopback(args.host):
        print(f"warning: the API is bound to {args.host}, reachable from other machines"
              + ("" if api_key else " by anyone: no --api-key is set"), file=sys.stderr, flush=True)
    print(f"[audio-minichat] model {path} loaded ({time.perf_counter() - started:.1f} s, {threads} thread"
          f"{'s' if threads > 1 else ''}); serving the OpenAI-compatible API at {server.url} (Ctrl-C stops)",
          file=sys.stderr, flush=True)
    previous = signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.httpd.shutdown).start())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.httpd.server_close()
        server.worker.stop()
    return server.url


__all__ = ["ApiServer", "ModelWorker", "Job", "serve_api", "is_loopback"]
