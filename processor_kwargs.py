"""transformers' usual processor call arguments, read for ``AudioMiniChatProcessor.__call__`` (processing_audio_minichat.py).

Processors in transformers take grouped arguments (``text_kwargs`` / ``audio_kwargs`` / ``common_kwargs``, as
``apply_chat_template`` passes them) and ``padding`` / ``truncation`` / ``return_attention_mask``. This processor
pads each batch to its longest prompt, never truncates (it would cut the audio placeholders) and always returns
the attention mask: those values are accepted, others are refused with one line; unknown arguments by name.
"""

from __future__ import annotations

# The processor's own arguments that a group may carry, with their defaults in __call__'s signature.
CALL_DEFAULTS = {"sampling_rate": None, "padding_side": None, "return_tensors": "pt", "add_special_tokens": False}


def standard_call_kwargs(kwargs: dict, given: dict, defaults: dict = CALL_DEFAULTS) -> dict:
    """``given`` (the call's own arguments) updated from ``kwargs``' groups where an argument was left at its default;
    a ValueError / TypeError naming what the processor cannot do or does not know."""
    flat = dict(kwargs)
    for group in ("text_kwargs", "audio_kwargs", "common_kwargs"):
        for key, value in (flat.pop(group, None) or {}).items():
            if key in flat and flat[key] != value:
                raise ValueError(f"{key} is given twice with different values ({flat[key]!r} and {group}'s {value!r}).")
            flat[key] = value
    out = dict(given)
    for key, default in defaults.items():
        if key in flat:
            value = flat.pop(key)
            if out[key] == default:
                out[key] = value
    padding = flat.pop("padding", True)
    if padding not in (True, "longest"):
        raise ValueError(f"padding={padding!r}: AudioMiniChatProcessor pads each batch to its longest prompt "
                         "(padding=True or 'longest'); padding_side chooses the side.")
    if flat.pop("truncation", None) not in (None, False):
        raise ValueError("truncation: AudioMiniChatProcessor never truncates a prompt (it would cut its audio "
                         "placeholders); shorten the text or the audio.")
    if flat.pop("return_attention_mask", True) is not True:
        raise ValueError("return_attention_mask: AudioMiniChatProcessor always returns the attention mask (the model reads it).")
    if flat:
        raise TypeError(f"Unexpected argument(s) {sorted(flat)} for AudioMiniChatProcessor.")
    return out


__all__ = ["CALL_DEFAULTS", "standard_call_kwargs"]
