"""audio-minichat: prompt a frozen instruction-tuned LLM with speech (Kang & Roy, Interspeech 2024), HF-native."""

__version__ = "0.1.0"

from transformers import AutoConfig, AutoModel, AutoProcessor

from .configuration_audio_minichat import AudioLayout, AudioMiniChatConfig
from .modeling_audio_minichat import AudioMiniChatForConditionalGeneration, AudioProjector
from .pipeline_audio_minichat import PIPELINE_TASK, AudioMiniChatPipeline
from .processing_audio_minichat import AudioInputError, AudioMiniChatProcessor, load_audio

AutoConfig.register(AudioMiniChatConfig.model_type, AudioMiniChatConfig, exist_ok=True)
AutoModel.register(AudioMiniChatConfig, AudioMiniChatForConditionalGeneration, exist_ok=True)
AutoProcessor.register(AudioMiniChatConfig, AudioMiniChatProcessor, exist_ok=True)

__all__ = [
    "AudioInputError",
    "AudioLayout",
    "AudioMiniChatConfig",
    "AudioMiniChatForConditionalGeneration",
    "AudioMiniChatPipeline",
    "AudioMiniChatProcessor",
    "AudioProjector",
    "PIPELINE_TASK",
    "load_audio",
]
