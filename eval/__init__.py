"""Spoken summarization benchmark."""
