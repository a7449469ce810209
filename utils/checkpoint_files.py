"""Names of the files that mark what a folder is, shared by the layers that write and the ones that read them."""

# In a training run's checkpoint-N/ (trainable tensors only, for --resume): how to rebuild the complete model.
RUN_CONFIG = "audio_minichat_training.json"

__all__ = ["RUN_CONFIG"]
