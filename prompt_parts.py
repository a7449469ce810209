"""The text of a prompt's user turn, torch-free: read by ``AudioMiniChatProcessor`` (processing_audio_minichat.py) and
by the llama.cpp route (inference/gguf_llm.py), which must build the very same prompt without importing torch.

- :func:`audio_with_text`: the parts of a turn holding one clip and an optional text prompt before or after it;
- :func:`render_content`: the string the chat template sees for a message's content (text parts and one
  placeholder per audio part, joined with newlines: the format the model was trained on);
- :func:`fill_placeholders`: the placeholders replaced, in order, by transcripts (the text version of a prompt);
- :func:`render_chat`: a chat template rendered on plain messages as transformers' ``apply_chat_template`` renders it,
  with jinja2 alone (importing transformers' renderer costs about a second of CPU, which the llama.cpp route does not
  spend); templates that use transformers' own ``{% generation %}`` tag go to transformers' renderer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from functools import lru_cache


def audio_with_text(prompt: str | None, text_position: str = "before") -> list[dict]:
    """User-turn parts for one clip with an optional text ``prompt`` before or after it."""
    if text_position not in ("before", "after"):
        raise ValueError(f"text_position must be 'before' or 'after', got {text_position!r}.")
    parts = [{"type": "audio"}]
    if prompt:
        text = {"type": "text", "text": prompt}
        parts = [text] + parts if text_position == "before" else parts + [text]
    return parts


def render_content(content, audio_token: str, where: str = "message") -> str:
    """The string the chat template sees for a message's content: text parts and one placeholder per audio
    part, joined with newlines (the format the model was trained on; the data builder writes it too)."""
    if isinstance(content, str):
        return content
    parts = []
    for index, part in enumerate(content):
        if not isinstance(part, dict):
            raise ValueError(f"{where}, content part {index}: expected a dict with a 'type', got {type(part).__name__}.")
        kind = part.get("type", "text")
        if kind == "audio":
            parts.append(audio_token)
        elif kind == "text":
            if "text" not in part:
                raise ValueError(f"{where}, content part {index}: a text part needs its 'text'.")
            parts.append(part["text"])
        else:
            raise ValueError(
                f"{where}, content part {index}: unsupported content part type {kind!r}; expected 'text' or 'audio'."
            )
    return "\n".join(parts)


def fill_placeholders(prompt: str, transcripts: Sequence[str], audio_token: str) -> str:
    """Replace the audio placeholders of ``prompt``, in order, with ``transcripts``."""
    pieces = prompt.split(audio_token)
    if len(pieces) - 1 != len(transcripts):
        raise ValueError(
            f"The prompt has {len(pieces) - 1} {audio_token} placeholder(s) but {len(transcripts)} transcript(s) were given."
        )
    out = [pieces[0]]
    for transcript, piece in zip(transcripts, pieces[1:]):
        out.extend([transcript.strip(), piece])
    return "".join(out)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    """The ``tojson`` filter chat templates expect: plain JSON (jinja2's own escapes HTML characters)."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise_exception(message):
    import jinja2

    raise jinja2.exceptions.TemplateError(message)


def _strftime_now(format_string):
    from datetime import datetime

    return datetime.now().strftime(format_string)


@lru_cache(maxsize=8)
def _compiled(template: str):
    """A chat template compiled in a sandbox, with the environment chat templates are written for (blocks trimmed,
    loop controls, ``tojson``, ``raise_exception``, ``strftime_now``)."""
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now)
    return env.from_string(template)


def render_chat(template: str, messages: list[dict], add_generation_prompt: bool = True, **variables) -> str:
    """``template`` rendered on ``messages`` (role / string content) with ``add_generation_prompt`` and ``variables``
    (the tokenizer's special tokens), as transformers' ``apply_chat_template(..., tokenize=False)`` renders it."""
    if re.search(r"\{%-?\s*generation\s*-?%\}", template):
        from transformers.utils.chat_template_utils import render_jinja_template

        rendered, _ = render_jinja_template(conversations=[messages], chat_template=template,
                                            add_generation_prompt=add_generation_prompt, **variables)
        return rendered[0]
    return _compiled(template).render(messages=messages, add_generation_prompt=add_generation_prompt, **variables)

