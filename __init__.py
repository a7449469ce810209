"""audio-minichat: prompt a frozen instruction-tuned LLM with speech (Kang & Roy, Interspeech 2024), HF-native.

The names below load on first use (using ``AudioMiniChatConfig`` or any other imports the model core, torch and
transformers, then registers the Auto classes and the pipeline task): a plain import of the package, and the
command line's ``--help`` / ``--version``, import neither torch nor transformers. Where transformers is imported
already, the registration happens at import, as it always did.
"""

import sys

__version__ = "0.1.0"

# exported name -> the module (relative to this package) that defines it
_EXPORTS = {
    "AUDIO_FRONTENDS": ".frontends",
    "AudioFrontEnd": ".frontend_base",
    "AudioFrontEndOutput": ".frontend_base",
    "AudioProjector": ".frontend_base",
    "AudioInputError": ".audio_io",
    "AudioMiniChatProcessor": ".processing_audio_minichat",
    "load_audio": ".audio_io",
    "AudioLayout": ".configuration_audio_minichat",
    "AudioMiniChatConfig": ".configuration_audio_minichat",
    "AudioMiniChatForConditionalGeneration": ".modeling_audio_minichat",
    "AudioMiniChatPipeline": ".pipeline_audio_minichat",
    "PIPELINE_TASK": ".pipeline_audio_minichat",
}
_registered = False


def register() -> None:
    """Register the model with transformers' ``AutoConfig`` / ``AutoModel`` / ``AutoProcessor`` and the pipeline
    task (once; what importing the package used to do eagerly)."""
    global _registered
    if _registered:
        return
    from transformers import AutoConfig, AutoModel, AutoProcessor

    from .configuration_audio_minichat import AudioMiniChatConfig
    from .modeling_audio_minichat import AudioMiniChatForConditionalGeneration
    from .pipeline_audio_minichat import AudioMiniChatPipeline, register_pipeline
    from .processing_audio_minichat import AudioMiniChatProcessor

    AutoConfig.register(AudioMiniChatConfig.model_type, AudioMiniChatConfig, exist_ok=True)
    AutoModel.register(AudioMiniChatConfig, AudioMiniChatForConditionalGeneration, exist_ok=True)
    AutoProcessor.register(AudioMiniChatConfig, AudioMiniChatProcessor, exist_ok=True)
    register_pipeline(AudioMiniChatPipeline)
    _registered = True


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    register()
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


if "transformers" in sys.modules:  # the heavy part is loaded already: register now, as a plain import always did
    register()

__all__ = [
    "AUDIO_FRONTENDS",
    "AudioFrontEnd",
    "AudioFrontEndOutput",
    "AudioInputError",
    "AudioLayout",
    "AudioMiniChatConfig",
    "AudioMiniChatForConditionalGeneration",
    "AudioMiniChatPipeline",
    "AudioMiniChatProcessor",
    "AudioProjector",
    "PIPELINE_TASK",
    "load_audio",
    "register",
]
