"""audio-minichat: prompt a frozen instruction-tuned LLM with speech (Kang & Roy, Interspeech 2024), HF-native."""

__version__ = "0.1.0"

from transformers import AutoConfig, AutoModel, AutoProcessor

from .configuration_audio_minichat import AudioLayout, AudioMiniChatConfig
from .frontend_base import AudioFrontEnd, AudioFrontEndOutput, AudioProjector
from .frontends import AUDIO_FRONTENDS
from .modeling_audio_minichat import AudioMiniChatForConditionalGeneration
from .pipeline_audio_minichat import PIPELINE_TASK, AudioMiniChatPipeline, register_pipeline
from .processing_audio_minichat import AudioInputError, AudioMiniChatProcessor, load_audio

AutoConfig.register(AudioMiniChatConfig.model_type, AudioMiniChatConfig, exist_ok=True)
AutoModel.register(AudioMiniChatConfig, AudioMiniChatForConditionalGeneration, exist_ok=True)
AutoProcessor.register(AudioMiniChatConfig, AudioMiniChatProcessor, exist_ok=True)
register_pipeline(AudioMiniChatPipeline)

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
]
