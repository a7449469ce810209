"""Answering spoken prompts: the e2e, cascade and text modes behind one interface.

The names below load on first use, so that a torch-free part of this package (``inference.ct2_asr``: the cascade's
Whisper in CTranslate2) can be imported without torch and transformers."""

_EXPORTS = {"SpeechLLM", "Answer", "MODES", "DEFAULT_SUMMARY_PROMPT"}


def __getattr__(name):
    if name in _EXPORTS:
        from . import speech_llm

        return getattr(speech_llm, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["SpeechLLM", "Answer", "MODES", "DEFAULT_SUMMARY_PROMPT"]
