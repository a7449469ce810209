"""The command line's choices and defaults, importable without torch or transformers (``--help`` and argument
errors must not load them). Each is a copy of the value its owner defines; tests/test_startup.py checks they agree:

- ``MODES``, ``DEFAULT_MODE``, ``DEFAULT_SUMMARY_PROMPT``: ``inference/speech_llm.py``;
- ``BUILD_VARIANTS``: the keys of ``VARIANTS`` in ``assets/default_build.py``;
- ``BUILD_FRONTENDS``: the keys of ``FRONTENDS`` in ``assets/build_any.py`` (``audio-minichat build --frontend``).
"""

MODES = ("e2e", "cascade", "text")
DEFAULT_MODE = "cascade"
DEFAULT_SUMMARY_PROMPT = "Summarize the following speech in a few sentences:"
BUILD_VARIANTS = ("default", "pool", "qformer", "qformer_lora", "qformer_lora_base")
BUILD_FRONTENDS = ("asr_tokens", "pool", "stack", "qformer", "posterior")

__all__ = ["MODES", "DEFAULT_MODE", "DEFAULT_SUMMARY_PROMPT", "BUILD_VARIANTS", "BUILD_FRONTENDS"]
