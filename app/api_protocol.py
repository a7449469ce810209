"""The OpenAI wire format of ``audio-minichat api`` (standard library only): errors, model names, the chat request
(text and ``input_audio`` parts), the multipart form of a transcription, and the response bodies and stream chunks.

A chat request is answered as one user message: its text parts (joined by newlines) are the prompt, its one
``input_audio`` part (base64 ``wav`` or ``mp3``) the audio, and the prompt goes before or after the audio as the
parts are ordered. Without audio the message's text is answered by the LLM alone (text mode)."""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import json
import time
import uuid
from dataclasses import dataclass

MODEL_MODES = {"audio-minichat": None, "audio-minichat-cascade": "cascade", "audio-minichat-e2e": "e2e",
               "audio-minichat-text": "text"}  # None: the default mode
TRANSCRIPTION_ALIASES = ("whisper-1",)  # what OpenAI clients send for a transcription
TRANSCRIPTION_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
AUDIO_FORMATS = ("wav", "mp3")


class ApiError(Exception):
    """An error answered as OpenAI's ``{"error": {"message", "type", "param", "code"}}`` with an HTTP status."""

    TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
             405: "invalid_request_error", 411: "invalid_request_error", 413: "invalid_request_error",
             500: "server_error", 503: "server_error"}

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.TYPES.get(self.status, "invalid_request_error"),
                          "param": self.param, "code": self.code}}


def model_mode(name, default_mode: str, what: str = "chat") -> str:
    """The mode a model name asks for, or 404 naming the models there are."""
    if what == "transcription" and name in TRANSCRIPTION_ALIASES:
        return "cascade"
    if not isinstance(name, str) or name not in MODEL_MODES:
        raise ApiError(404, f"The model {name!r} does not exist; the models are {', '.join(MODEL_MODES)}"
                       + (f" (and {', '.join(TRANSCRIPTION_ALIASES)} for transcriptions)" if what == "transcription" else ""),
                       param="model", code="model_not_found")
    return MODEL_MODES[name] or default_mode


def models_body(created: int) -> dict:
    return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "audio-minichat"}
                                       for name in MODEL_MODES]}


@dataclass
class ChatRequest:
    model: str
    mode: str
    prompt: str | None
    audio: bytes | None
    audio_format: str | None
    text_position: str
    max_tokens: int
    temperature: float
    top_p: float
    stream: bool
    include_usage: bool


def _number(body: dict, key: str, low: float, high: float, default, kind=float):
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not float(value).is_integer()):
        raise ApiError(400, f"{key} must be {'an integer' if kind is int else 'a number'}, got {value!r}", param=key)
    if not low <= value <= high:
        raise ApiError(400, f"{key} must be between {low} and {high}, got {value!r}", param=key)
    return kind(value)


def parse_chat(body, default_mode: str, default_max_tokens: int, max_audio_bytes: int) -> ChatRequest:
    """A chat completion request, or ApiError(400/404/413) naming what is wrong."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    mode = model_mode(body.get("model"), default_mode)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty list of {role, content} objects", param="messages")
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role != "user" or i != len(messages) - 1:
            raise ApiError(400, f"messages[{i}]: role {role!r} is not supported: audio-minichat answers one user "
                           "message (text and input_audio parts), with no system prompt or earlier turns",
                           param=f"messages[{i}]")
    content, where = messages[-1].get("content"), f"messages[{len(messages) - 1}].content"
    texts, audio, fmt, position = [], None, None, "before"
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
    if not isinstance(parts, list):
        raise ApiError(400, f"{where} must be a string or a list of content parts", param=where)
    for j, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
            position = "after" if audio is not None else position
        elif kind == "input_audio":
            spec = part.get("input_audio")
            if audio is not None:
                raise ApiError(400, f"{where}[{j}]: one input_audio part per request (a second was given)", param=f"{where}[{j}]")
            if not isinstance(spec, dict) or not isinstance(spec.get("data"), str):
                raise ApiError(400, f"{where}[{j}].input_audio must be {{\"data\": base64, \"format\": \"wav\"|\"mp3\"}}",
                               param=f"{where}[{j}].input_audio")
            fmt = spec.get("format", "wav")
            if fmt not in AUDIO_FORMATS:
                raise ApiError(400, f"{where}[{j}].input_audio.format must be wav or mp3, got {fmt!r}",
                               param=f"{where}[{j}].input_audio.format")
            if len(spec["data"]) * 3 // 4 > max_audio_bytes:
                raise ApiError(413, f"{where}[{j}]: the audio is over the upload limit of {max_audio_bytes / 1e6:g} MB",
                               param=f"{where}[{j}].input_audio.data", code="upload_too_large")
            try:
                audio = base64.b64decode(spec["data"], validate=True)
            except (binascii.Error, ValueError):
                raise ApiError(400, f"{where}[{j}].input_audio.data is not valid base64",
                               param=f"{where}[{j}].input_audio.data") from None
            if not audio:
                raise ApiError(400, f"{where}[{j}].input_audio.data is empty: no audio", param=f"{where}[{j}].input_audio.data")
        else:
            raise ApiError(400, f"{where}[{j}]: content part type {kind!r} is not supported (text, input_audio)",
                           param=f"{where}[{j}]")
    prompt = "\n".join(t for t in texts if t.strip()) or None
    if audio is not None and mode == "text":
        raise ApiError(400, f"model {body['model']!r} answers text only; send audio to audio-minichat, "
                       "audio-minichat-cascade or audio-minichat-e2e", param="model")
    if audio is None and prompt is None:
        raise ApiError(400, f"{where}: no text and no audio to answer", param=where)
    if body.get("n", 1) != 1:
        raise ApiError(400, "n must be 1 (one answer per request)", param="n")
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    max_tokens = _number({"max_tokens": limit}, "max_tokens", 1, 1 << 20, default_max_tokens, int)
    options = body.get("stream_options") or {}
    return ChatRequest(body["model"], mode, prompt, audio, fmt, position, max_tokens,
                       _number(body, "temperature", 0, 2, 0.0), _number(body, "top_p", 0, 1, 1.0),
                       bool(body.get("stream", False)), bool(isinstance(options, dict) and options.get("include_usage")))


def parse_multipart(content_type: str, body: bytes) -> dict:
    """A multipart/form-data body: ``{name: str}`` for fields, ``{name: (filename, bytes)}`` for files."""
    if not content_type.lower().startswith("multipart/form-data") or "boundary=" not in content_type:
        raise ApiError(400, "a transcription request must be multipart/form-data (with a file field)")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\nMIME-Version: 1.0\r\n\r\n" + body)
    if not message.is_multipart():
        raise ApiError(400, "the multipart/form-data body could not be parsed")
    fields: dict = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        payload = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        fields[name] = (filename, payload) if filename is not None else payload.decode("utf-8", "replace")
    return fields


# ---- responses -----------------------------------------------------------------------------------------------
def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def usage_body(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion_body(cid: str, model: str, text: str, finish_reason: str, usage: dict, extra: dict) -> dict:
    return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                         "finish_reason": finish_reason}],
            "usage": usage, "audio_minichat": extra}


def chunk_event(cid: str, model: str, delta: dict | None, finish_reason: str | None = None,
                usage: dict | None = None) -> bytes:
    """One server-sent event of a streamed completion (``delta`` None: the usage chunk, with no choices)."""
    chunk = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
             "choices": [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None,
                                                   "finish_reason": finish_reason}]}
    if usage is not None:
        chunk["usage"] = usage
    return b"data: " + json.dumps(chunk, ensure_ascii=False).encode("utf-8") + b"\n\n"


DONE_EVENT = b"data: [DONE]\n\n"


class TextTrimmer:
    """Stream pieces whose concatenation is the whole text stripped (as ``Answer.text`` is): leading blanks are
    dropped, trailing blanks held back until more text follows."""

    def __init__(self):
        self.started, self.held = False, ""

    def feed(self, piece: str) -> str:
        if not self.started:
            piece = piece.lstrip()
            if not piece:
                return ""
            self.started = True
        piece = self.held + piece
        kept = piece.rstrip()
        self.held = piece[len(kept):]
        return kept


def verbose_transcription(text: str, segments: list[dict], seconds: float | None) -> dict:
    """OpenAI's ``verbose_json``: the text, the duration and the segments (id, seek, start, end, text)."""
    return {"task": "transcribe", "language": "english", "duration": seconds, "text": text,
            "segments": [{"id": i, "seek": 0, "start": s["start"], "end": s["end"], "text": s["text"], "tokens": [],
                          "temperature": 0.0} for i, s in enumerate(segments)]}


__all__ = ["ApiError", "ChatRequest", "parse_chat", "parse_multipart", "model_mode", "models_body", "MODEL_MODES",
           "TRANSCRIPTION_FORMATS", "completion_body", "chunk_event", "usage_body", "completion_id", "DONE_EVENT",
           "TextTrimmer", "verbose_transcription"]
