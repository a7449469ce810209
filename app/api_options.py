"""``audio-minichat api``'s options (argparse only: registering them loads nothing; ``app/api.py`` is imported when
the command runs)."""

from __future__ import annotations

from .choices import DEFAULT_MODEL_DTYPE, MODEL_DTYPES

DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD_MB = 25.0  # OpenAI's own limit for an audio upload
DEFAULT_MAX_QUEUE = 16

API_EXAMPLES = """examples:
  audio-minichat api                                   # http://127.0.0.1:8000/v1
  audio-minichat api --port 9000 --api-key secret --max-queue 8
  curl http://127.0.0.1:8000/v1/models

  from openai import OpenAI
  client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
  client.audio.transcriptions.create(model="audio-minichat", file=open("talk.wav", "rb"), response_format="srt")

models (the mode is chosen by the model name):
  audio-minichat          the default mode (cascade)
  audio-minichat-cascade  Whisper's transcript, then the LLM
  audio-minichat-e2e      the speech itself through the model
  audio-minichat-text     text only (the LLM alone)

exit status:
  0  stopped (Ctrl-C or SIGTERM)
  2  bad arguments, no usable model, or the port cannot be bound"""


def add_api_parser(sub) -> None:
    p = sub.add_parser("api", help="an OpenAI-compatible HTTP API (chat completions with audio, transcriptions)",
                       description="Serve the model over an OpenAI-compatible HTTP API: POST /v1/chat/completions (text "
                                   "and input_audio parts, streaming), POST /v1/audio/transcriptions (json, text, srt, "
                                   "vtt, verbose_json), GET /v1/models. One model in memory; requests wait in a queue "
                                   "for one worker. See docs/api.md.",
                       epilog=API_EXAMPLES)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (anything but loopback is reachable by others: "
                   "use --api-key)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (0: a free one, printed at start)")
    p.add_argument("--model", default=None, metavar="DIR", help="AudioMiniChat checkpoint folder (default: the offline "
                   "default, built on first use)")
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on every request (default: "
                   "none; $AUDIO_MINICHAT_API_KEY is read too)")
    p.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                   help="the largest audio a request may carry, in MB (larger: 413)")
    p.add_argument("--max-queue", type=int, default=DEFAULT_MAX_QUEUE,
                   help="requests that may wait for the model besides the one running (more: 503)")
    p.add_argument("--max-tokens", type=int, default=128, help="max_tokens when a chat request gives none")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, mps)")
    p.add_argument("--dtype", default=DEFAULT_MODEL_DTYPE, choices=MODEL_DTYPES,
                   help="how the model's weights are held (default: %(default)s: from the processor, as the other commands)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads for torch (default: as the other commands: 1 on 2 cores or fewer, else the idle "
                        "processors)")
    p.add_argument("--no-speech-check", action="store_true",
                   help="answer audio even when no speech is detected in it")
    p.add_argument("--quiet", action="store_true", help="no request log lines on stderr")


__all__ = ["add_api_parser", "DEFAULT_PORT", "DEFAULT_MAX_UPLOAD_MB", "DEFAULT_MAX_QUEUE"]
