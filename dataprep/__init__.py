"""Training data: corpus texts, TTS voices and the resumable builder (``python -m audio_minichat.dataprep``)."""
