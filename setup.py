"""Packaging for audio-minichat.

The repository root *is* the package ``audio_minichat``: the model core that remote code ships
(``configuration_audio_minichat.py``, ``processing_audio_minichat.py``, ``modeling_audio_minichat.py``, the
``frontend_*.py`` audio front ends, ``pipeline_audio_minichat.py``) sits at the root, where
``trust_remote_code`` checkpoints expect it; everything else lives in subpackages named for their concern.
"""
import os

from setuptools import setup

SUBPACKAGES = ["app", "assets", "dataprep", "eval", "inference", "metrics", "training", "utils"]

INSTALL_REQUIRES = [
    "torch==2.11.0",
    "torchaudio==2.11.0",
    "transformers==5.24.0",
    "accelerate==1.15.0",
    "datasets==5.2.0",
    "evaluate==0.4.6",
    "peft==0.21.2",
    "gguf==0.19.0",
    "soundfile==0.14.0",
    "rouge-score==0.1.2",
    "safetensors>=0.4",
    "tokenizers>=0.21",
    "numpy>=1.26,<2.5",
    "pyyaml>=6",
    "tqdm>=4.66",
    "tensorboard>=2.15",
    "matplotlib>=3.8",
]

setup(
    name="audio-minichat",
    version="0.1.0",
    description="A direct speech interface for frozen instruction-tuned LLMs (Kang & Roy, Interspeech 2024), HF-native.",
    long_description=open("README.md", encoding="utf-8").read() if os.path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    package_dir={"audio_minichat": ".", **{f"audio_minichat.{p}": p for p in SUBPACKAGES}},
    packages=["audio_minichat", *(f"audio_minichat.{p}" for p in SUBPACKAGES)],
    package_data={"audio_minichat.assets": ["weights/*.safetensors", "weights/*.json"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "test": ["pytest>=8", "ctranslate2==4.8.5"],
    },
    entry_points={"console_scripts": ["audio-minichat=audio_minichat.app.cli:main"]},
)
