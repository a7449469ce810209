"""`audio-minichat api`: the OpenAI-compatible server (app/api.py), driven by the official `openai` client against
127.0.0.1. The wire format's parsing is checked alone; the server runs over the real offline default: chat with
audio (the same answer as the library's), streaming (the same answer, in OpenAI's chunks, ending with [DONE]),
transcription in each format (the same segments as `transcribe --format`), OpenAI-shaped errors with their
statuses, and a load test (8 clients x 5 requests: no failures, every answer equal to the request's answer alone).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import warnings
from pathlib import Path

import pytest

from audio_minichat.app.api_protocol import ApiError, TextTrimmer, parse_chat, parse_multipart

ROOT = Path(__file__).resolve().parents[1]
SHORT_WAV = ROOT / "examples" / "short.wav"
KEY = "test-key"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_api", ROOT / "scripts" / "bench_api.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _audio_part(data: bytes, fmt: str = "wav") -> dict:
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(data).decode(), "format": fmt}}


# ---------------------------------------------------------------------------------------------------------
# the wire format alone
# ---------------------------------------------------------------------------------------------------------
def _chat(content, **body):
    return parse_chat({"model": "audio-minichat", "messages": [{"role": "user", "content": content}], **body},
                      "cascade", 128, 1000)


def test_chat_request_parsing():
    request = _chat([_audio_part(b"RIFF"), {"type": "text", "text": "Who?"}], max_completion_tokens=7, temperature=0.5)
    assert (request.mode, request.prompt, request.audio, request.audio_format, request.text_position,
            request.max_tokens, request.temperature, request.stream) == ("cascade", "Who?", b"RIFF", "wav", "after", 7, 0.5, False)
    assert _chat("Hi", max_tokens=3).prompt == "Hi" and _chat("Hi").max_tokens == 128
    assert parse_chat({"model": "audio-minichat-e2e", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Q"}, _audio_part(b"x", "mp3")]}]}, "cascade", 128, 1000).text_position == "before"
    cases = [
        (lambda: _chat("Hi", max_tokens=0), 400, "max_tokens must be between 1 and 1048576, got 0"),
        (lambda: _chat([_audio_part(b"")]), 400, "messages[0].content[0].input_audio.data is empty: no audio"),
        (lambda: _chat([_audio_part(b"x", "flac")]), 400, "messages[0].content[0].input_audio.format must be wav or mp3, got 'flac'"),
        (lambda: _chat([_audio_part(b"x" * 2000)]), 413, "messages[0].content[0]: the audio is over the upload limit of 0.001 MB"),
        (lambda: _chat([{"type": "image_url", "image_url": {}}]), 400,
         "messages[0].content[0]: content part type 'image_url' is not supported (text, input_audio)"),
        (lambda: parse_chat({"model": "gpt-4o", "messages": []}, "cascade", 128, 1000), 404,
         "The model 'gpt-4o' does not exist; the models are audio-minichat, audio-minichat-cascade, audio-minichat-e2e, "
         "audio-minichat-text"),
        (lambda: parse_chat({"model": "audio-minichat", "messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "y"}]},
                            "cascade", 128, 1000), 400,
         "messages[0]: role 'system' is not supported: audio-minichat answers one user message (text and input_audio "
         "parts), with no system prompt or earlier turns"),
    ]
    for call, status, message in cases:
        with pytest.raises(ApiError) as info:
            call()
        assert (info.value.status, info.value.message) == (status, message)
        assert set(info.value.body()["error"]) == {"message", "type", "param", "code"}


def test_multipart_and_stream_trimming():
    boundary = "XyZ"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
            f"Content-Type: audio/wav\r\n\r\n").encode() + bytes(range(256)) + f"\r\n--{boundary}--\r\n".encode()
    fields = parse_multipart(f"multipart/form-data; boundary={boundary}", body)
    assert fields == {"model": "whisper-1", "file": ("a.wav", bytes(range(256)))}
    with pytest.raises(ApiError, match="must be multipart/form-data"):
        parse_multipart("application/json", b"{}")
    trimmer = TextTrimmer()
    pieces = [trimmer.feed(p) for p in ["  ", " Hello", " world ", " ", "again.  "]]
    assert "".join(pieces) == "Hello world  again." and pieces[:2] == ["", "Hello"]  # as the whole, stripped


# ---------------------------------------------------------------------------------------------------------
# the server on the real default
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served():
    from audio_minichat.app.api import ApiServer
    from audio_minichat.assets.default_build import build_default
    from audio_minichat.inference.speech_llm import SpeechLLM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        llm = SpeechLLM(build_default())
    server = ApiServer(llm, "127.0.0.1", 0, api_key=KEY, max_upload_mb=1.0, max_queue=8).start()
    yield server, llm
    server.close()


def _client(server, key=KEY):
    from openai import OpenAI

    return OpenAI(base_url=server.url, api_key=key, max_retries=0, timeout=600)


@pytest.mark.integration
def test_models_and_chat_with_audio_equal_the_library(served):
    from audio_minichat.inference.longform import summarize_long

    server, llm = served
    client = _client(server)
    assert [m.id for m in client.models.list()] == ["audio-minichat", "audio-minichat-cascade", "audio-minichat-e2e",
                                                    "audio-minichat-text"]
    prompt = "Who is late, and why?"
    reply = client.chat.completions.create(model="audio-minichat", max_tokens=12, temperature=0, messages=[
        {"role": "user", "content": [{"type": "text", "text": prompt}, _audio_part(SHORT_WAV.read_bytes())]}])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alone = summarize_long(llm, "cascade", audio=str(SHORT_WAV), prompt=prompt, max_new_tokens=12)
    choice = reply.choices[0]
    assert choice.message.content == alone.text and choice.message.role == "assistant"
    assert reply.model == "audio-minichat" and reply.object == "chat.completion"
    assert choice.finish_reason == alone.finish_reason
    assert reply.usage.completion_tokens <= 12 and reply.usage.prompt_tokens > 20
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    extra = reply.model_extra["audio_minichat"]
    assert extra["mode"] == "cascade" and "mill road" in extra["transcript"].lower()
    cut = client.chat.completions.create(model="audio-minichat-text", max_tokens=3, messages=[
        {"role": "user", "content": "Write a long story about a dragon."}])
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 3


@pytest.mark.integration
def test_streaming_gives_the_same_answer_in_openai_chunks(served):
    server, _ = served
    client = _client(server)
    request = dict(model="audio-minichat-e2e", max_tokens=10, messages=[
        {"role": "user", "content": [_audio_part(SHORT_WAV.read_bytes()), {"type": "text", "text": "Summarize:"}]}])
    whole = client.chat.completions.create(**request)
    chunks = list(client.chat.completions.create(**request, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert len({c.id for c in chunks}) == 1 and all(c.object == "chat.completion.chunk" for c in chunks)
    raw = urllib.request.Request(server.url + "/chat/completions", method="POST", headers={
        "Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        data=json.dumps({"model": "audio-minichat-text", "max_tokens": 4, "stream": True,
                         "messages": [{"role": "user", "content": "Hi"}]}).encode())
    with urllib.request.urlopen(raw, timeout=300) as response:
        assert response.headers["Content-Type"] == "text/event-stream"
        events = response.read().decode().split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""] and all(e.startswith("data: ") for e in events[:-1])


@pytest.mark.integration
def test_transcriptions_in_each_format(served):
    from audio_minichat.inference.subtitles import format_srt, format_vtt, transcribe_segments

    server, llm = served
    client = _client(server)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = llm.transcribe(str(SHORT_WAV)).text
        _, segments = transcribe_segments(llm, str(SHORT_WAV))

    def transcribe(fmt, model="audio-minichat"):
        with open(SHORT_WAV, "rb") as fh:
            return client.audio.transcriptions.create(model=model, file=fh, response_format=fmt)

    assert transcribe("json", "whisper-1").text == plain
    assert transcribe("text") == plain + "\n"
    srt, vtt = transcribe("srt"), transcribe("vtt")
    assert srt == format_srt(segments) and vtt == format_vtt(segments)
    assert re.match(r"1\n00:00:0\d,\d{3} --> 00:00:\d\d,\d{3}\n\S", srt) and vtt.startswith("WEBVTT\n\n00:00:0")
    verbose = transcribe("verbose_json")
    assert verbose.duration == pytest.approx(14.718, abs=1e-3) and verbose.text == " ".join(s["text"] for s in segments)
    assert [(s.start, s.end, s.text) for s in verbose.segments] == [(s["start"], s["end"], s["text"]) for s in segments]


@pytest.mark.integration
def test_errors_are_openai_shaped_with_their_status(served):
    import openai

    server, _ = served
    client = _client(server)

    def error(call):
        with pytest.raises(openai.APIStatusError) as info:
            call()
        return info.value.status_code, info.value.body

    status, body = error(lambda: client.audio.transcriptions.create(model="audio-minichat", file=("bad.wav", b"RIFF not a wav")))
    assert status == 400 and body["code"] == "invalid_audio" and body["param"] == "file"
    assert body["message"].startswith("file: cannot read audio file the upload (expected WAV")
    status, body = error(lambda: client.audio.transcriptions.create(model="audio-minichat", file=("empty.wav", b"")))
    assert (status, body["message"]) == (400, "the file 'empty.wav' is empty: no audio")
    status, body = error(lambda: client.chat.completions.create(model="audio-minichat", messages=[
        {"role": "user", "content": [_audio_part(b"\x00" * 64)]}]))
    assert status == 400 and body["message"].startswith("input_audio: cannot read audio file the upload")
    status, body = error(lambda: client.audio.transcriptions.create(model="audio-minichat", file=("big.wav", b"\x00" * 1_500_000)))
    assert (status, body["code"]) == (413, "upload_too_large") and "over the upload limit of 1 MB" in body["message"]
    status, body = error(lambda: client.chat.completions.create(model="audio-minichat", messages=[
        {"role": "user", "content": [_audio_part(b"\x00" * 1_200_000)]}]))
    assert (status, body["code"]) == (413, "upload_too_large")
    status, body = error(lambda: client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}]))
    assert (status, body["code"], body["param"]) == (404, "model_not_found", "model")
    status, body = error(lambda: _client(server, "wrong").models.list())
    assert (status, body["code"], body["type"]) == (401, "invalid_api_key", "invalid_request_error")
    # queue full: the worker held by a job, --max-queue (8) jobs waiting; the next request is refused at once
    gate, jobs = threading.Event(), []
    jobs.append(server.worker.submit(lambda emit: gate.wait(60)))
    assert jobs[0].started.wait(60)
    jobs += [server.worker.submit(lambda emit: None) for _ in range(8)]
    try:
        start = time.perf_counter()
        status, body = error(lambda: client.chat.completions.create(model="audio-minichat-text", messages=[{"role": "user", "content": "x"}]))
        assert (status, body["code"], body["type"]) == (503, "queue_full", "server_error") and time.perf_counter() - start < 5
        assert body["message"] == "the server is busy: 8 requests are already waiting for the model; retry later"
    finally:
        gate.set()
    assert [job.result() for job in jobs[1:]] == [None] * 8


@pytest.mark.integration
def test_load_8_clients_5_requests_each_all_answered_as_alone(served):
    server, _ = served
    bench = _bench()
    result = bench.load_test(server.url, bench.chat_requests(max_tokens=6), clients=8, per_client=5, api_key=KEY)
    assert result["failures"] == [] and result["mismatches"] == []
    assert result["requests"] == 40 and result["p50_s"] <= result["p95_s"] and result["requests_per_s"] > 0
    assert all(result["expected"])


@pytest.mark.integration
def test_api_command_warns_beyond_loopback_and_stops_on_sigterm():
    """`audio-minichat api --host 0.0.0.0`: one warning line, the URL on stderr, answers; SIGTERM stops it (0)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "audio_minichat.app.cli", "api", "--host", "0.0.0.0", "--port", "0"],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines = []
        while not any("serving" in line for line in lines):
            line = proc.stderr.readline()
            assert line, "".join(lines)
            lines.append(line)
        assert "warning: the API is bound to 0.0.0.0, reachable from other machines by anyone: no --api-key is set\n" in lines
        port = int(re.search(r"http://0\.0\.0\.0:(\d+)/v1", lines[-1]).group(1))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=30) as response:
            assert json.load(response)["data"][0]["id"] == "audio-minichat"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
