"""The command line's choices and defaults, importable without torch or transformers (``--help`` and argument
errors must not load them). Each is a copy of the value its owner defines; tests/test_startup.py checks they agree:

- ``MODES``, ``DEFAULT_MODE``, ``DEFAULT_SUMMARY_PROMPT``: ``inference/speech_llm.py``;
- ``BUILD_VARIANTS``: the keys of ``VARIANTS`` in ``assets/default_build.py``;
- ``BUILD_FRONTENDS``: the keys of ``FRONTENDS`` in ``assets/build_any.py`` (``audio-minichat build --frontend``);
- ``LLM_BACKENDS``: ``inference/gguf_llm.py`` (``--llm-backend``, decided in app/llm_route.py);
- ``MODEL_DTYPES``: "auto" (``utils/cpu_features.py`` decides) and the dtype names of ``utils/dtypes.py``.
"""

MODES = ("e2e", "cascade", "text")
DEFAULT_MODE = "cascade"
DEFAULT_SUMMARY_PROMPT = "Summarize the following speech in a few sentences:"
BUILD_VARIANTS = ("default", "pool", "qformer", "qformer_lora", "qformer_lora_base", "posterior_ctc", "posterior_ctc_conv")
BUILD_FRONTENDS = ("asr_tokens", "pool", "stack", "qformer", "posterior")
# --dtype: how the model's weights are held. "auto" (the default): from what the processor reports at run time; on a
# CPU with AVX2 and 1 thread the LLM's linear layers hold fp16 weights (utils.cpu_features.choose_llm_plan), else
# float32.
MODEL_DTYPES = ("auto", "float32", "bfloat16", "float16")
DEFAULT_MODEL_DTYPE = "auto"
LLM_BACKENDS = ("auto", "llama.cpp", "transformers")
LLM_ROUTE_HELP = ("who runs the LLM: llama.cpp (from the checkpoint's own GGUF file, with Whisper in CTranslate2 and no "
                  "torch: less memory, faster; the cascade, the text mode, and e2e where it is the soft cascade, as the "
                  "default's is; the answers can differ in wording from transformers', see docs/cpu-speed.md) or "
                  "transformers (the reference, and every other e2e front end); auto: "
                  "llama.cpp where it can run (llama-cpp-python installed: pip install -e '.[fast]'; the checkpoint's "
                  "LLM from a GGUF file; its Whisper folder written by a first cascade run), else transformers. --json "
                  "names it as llm_backend")

__all__ = ["MODES", "DEFAULT_MODE", "DEFAULT_SUMMARY_PROMPT", "BUILD_VARIANTS", "BUILD_FRONTENDS", "MODEL_DTYPES", "DEFAULT_MODEL_DTYPE", "LLM_BACKENDS", "LLM_ROUTE_HELP"]
