"""Metrics shared by training and evaluation (WER, response perplexity)."""
