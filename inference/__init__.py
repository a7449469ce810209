"""Answering spoken prompts: the e2e, cascade and text modes behind one interface."""

from .speech_llm import DEFAULT_SUMMARY_PROMPT, MODES, Answer, SpeechLLM

__all__ = ["SpeechLLM", "Answer", "MODES", "DEFAULT_SUMMARY_PROMPT"]
