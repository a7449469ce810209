"""The offline default's builds without torch: the variants and their options, what a build records
(``config.provenance``: :func:`read_build_info`) and whether a cached build is current (:func:`cached_build`), read by
assets/default_build.py (which builds) and by the llama.cpp route (app/llm_route.py), which must not import torch."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..utils.io import build_dir, default_cache_dir

DEFAULT_LLM = "smollm2-135m-instruct"
DEFAULT_ENCODER = "whisper-tiny.en"
READY_MARKER = ".audio_minichat_ready"  # written last into a complete build
DEFAULT_BUILD_VERSION = 9  # 9: front-end modules, provenance in config.json, the cascade inside, tokens reach the LLM
# whole, decoding defaults in generation_config.json
# How every build decodes, in all three modes (its generation_config.json, which SpeechLLM, the pipeline and a bare
# generate() read): greedy, no 4-gram twice within an answer (the prompt's own 4-grams stay allowed), and room for a
# summary. Chosen by measurement against plain greedy, no_repeat_ngram_size 4 and repetition_penalty 1.2
# (scripts/decoding_sweep.py; docs/evaluation.md, "Decoding").
DECODING = {"do_sample": False, "num_beams": 1, "max_new_tokens": 256, "answer_no_repeat_ngram_size": 4}
# The default's AudioMiniChatConfig options beyond the parts: one embedding per token Whisper's decoder writes, the
# LLM-embedding mixture of its top-8 tokens plus a linear map of its state (docs/how-it-hears.md);
# {} gives the paper's pool 8/4 over encoder frames.
# asr_token_pieces 16: every Whisper tiny.en token but 8 junk ones (runs of symbols) is at most 16 SmolLM2 pieces.
DEFAULT_MODEL_KWARGS: dict = {"audio_frontend": "asr_tokens", "frontend_config": {"asr_token_mixture": 8, "asr_token_pieces": 16}}
# Seed of a fresh projector's initialisation: the same build command gives the same untrained model.
PROJECTOR_INIT_SEED = 0
# A trained projector shipped with the package (a run's final/trained_weights.safetensors; docs/training-log.md).
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SHIPPED_PROJECTOR = WEIGHTS_DIR / "default_projector.safetensors"
# Builds of the same parts: name -> (AudioMiniChatConfig options, shipped trained weights[, encoder spec: default
# DEFAULT_ENCODER]). "default" is what `audio-minichat` runs; "pool" is the paper's route (average pool 8/4 over
# encoder frames), kept to compare.
QFORMER_KWARGS: dict = {"audio_frontend": "qformer", "frontend_config": {"qformer_queries": 100}, "keep_asr_decoder": True}
# recognition-free, after LegoSLM: a CTC posterior over the LLM's own tokens per 80 ms (pool 4/4 of Whisper's frames),
# scored by the LLM's input embeddings (tied head, an MLP in front), read as mixtures of those embeddings at the
# positions the blank leaves (training/align_posterior.py trains it; docs/hearing-study.md, fourth sitting)
POSTERIOR_CTC_KWARGS: dict = {"audio_frontend": "posterior", "keep_asr_decoder": True, "projector_type": "mlp",
                              "projector_hidden_size": 1024,
                              "frontend_config": {"posterior_head": "tied", "posterior_blank": True, "posterior_kernel": 4,
                                                  "posterior_stride": 4, "posterior_temperature": 0.3}}
POSTERIOR_CTC_CONV_KWARGS: dict = {**POSTERIOR_CTC_KWARGS, "projector_type": "conv_mlp",
                                   "frontend_config": {**POSTERIOR_CTC_KWARGS["frontend_config"], "posterior_temperature": 0.5}}
# the study's LLM adapter that is active only for prompts with audio (configs/study/qformer_dense_lora*.yaml)
STUDY_AUDIO_LORA: dict = {"r": 16, "alpha": 32, "targets": ["q_proj", "v_proj"]}
VARIANTS = {
    "default": (DEFAULT_MODEL_KWARGS, SHIPPED_PROJECTOR),
    "pool": ({"keep_asr_decoder": True}, WEIGHTS_DIR / "pool_stage2_projector.safetensors"),
    # recognition-free: learned queries read Whisper's encoder through a trained copy of its decoder (DiVA-style),
    # 100 per 30 s window; Whisper's own decoder is kept for the cascade (docs/hearing-study.md)
    "qformer": (QFORMER_KWARGS, WEIGHTS_DIR / "qformer_projector.safetensors"),
    # the study's best arm: the querying adapter plus a LoRA on the LLM that is active only for prompts with audio
    # (text prompts run the untouched LLM); trained by configs/study/qformer_dense_lora.yaml
    "qformer_lora": ({**QFORMER_KWARGS, "audio_lora": STUDY_AUDIO_LORA}, WEIGHTS_DIR / "qformer_lora_projector.safetensors"),
    # the same on the larger Whisper base encoder (multilingual, d_model 512): the study's encoder lever
    "qformer_lora_base": ({**QFORMER_KWARGS, "audio_lora": STUDY_AUDIO_LORA},
                          WEIGHTS_DIR / "qformer_lora_base_projector.safetensors", "whisper-base"),
    # the posterior route (after LegoSLM): CTC-aligned posteriors over the LLM's tokens, read as mixtures of its
    # embeddings (training/align_posterior.py, python -m audio_minichat.app.align)
    "posterior_ctc": (POSTERIOR_CTC_KWARGS, WEIGHTS_DIR / "posterior_ctc_projector.safetensors"),
    # the same with temporal context in its head (a depthwise convolution over 5 positions inside the MLP), trained on
    # the same rows and schedule, read at 0.5: the recognition-free route that hears most (docs/hearing-study.md,
    # seventh sitting)
    "posterior_ctc_conv": (POSTERIOR_CTC_CONV_KWARGS, WEIGHTS_DIR / "posterior_ctc_conv_projector.safetensors"),
}


def _file_digest(path: Path) -> str:
    import hashlib

    return hashlib.sha1(path.read_bytes()).hexdigest()


def read_build_info(model_dir: str | os.PathLike) -> dict:
    """What a checkpoint was built from and whether it is trained: ``config.provenance`` in its config.json."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text()).get("provenance") or {}


def safetensors_problem(path: str | os.PathLike) -> str | None:
    """Why a safetensors file is unusable, from its header alone (its JSON header must parse and the file must be as
    long as the header's last data offset), or None. Reads the header, never the tensors."""
    from ..utils.safetensors_view import read_header

    try:
        size = os.path.getsize(path)
        length, header = read_header(path)
    except ValueError as exc:
        return str(exc)
    except OSError as exc:
        return f"not a safetensors file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v]
    need = 8 + length + max(ends, default=0)
    if size < need:
        return f"cut short: {size} bytes, its tensors need {need}"
    return None


def checkpoint_problem(model_dir: str | os.PathLike) -> str | None:
    """Whether a checkpoint folder (with a config.json) holds what loading it reads: its weights
    (``model.safetensors``, or every shard its index names) whole by their headers and sizes, and
    ``processor_config.json``. One line naming the file that is missing or cut short (an interrupted copy is the
    usual cause), or None. Cheap: reads file sizes and safetensors headers only."""
    from ..utils.safetensors_view import INDEX, weights_files

    folder = Path(model_dir)
    try:
        weights = weights_files(folder)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f"{str(folder / INDEX)!r} is not a readable weights index"
    for path in weights:
        if not path.is_file():
            return f"{str(path)!r} is missing (an interrupted copy?): the checkpoint's weights are not all there"
        problem = safetensors_problem(path)
        if problem is not None:
            return f"{str(path)!r} is {problem} (an interrupted copy?)" if problem.startswith("cut short") else f"{str(path)!r}: {problem}"
    processor = folder / "processor_config.json"
    if not processor.is_file():
        return f"{str(processor)!r} is missing (an interrupted copy?): the checkpoint's processor cannot be loaded"
    return None


def cached_build(cache_dir: str | os.PathLike | None = None, variant: str = "default", untrained: bool = False) -> Path | None:
    """The build of ``variant`` in the cache where it is complete and current (this package's build version, variant
    options, encoder and shipped weights), else None: ``build_default`` then builds it."""
    config_kwargs, shipped, *rest = VARIANTS[variant]
    out = build_dir(variant, untrained, Path(cache_dir) if cache_dir else default_cache_dir())
    projector = shipped if shipped.exists() and not untrained else None
    info = read_build_info(out) if (out / READY_MARKER).is_file() else {}
    wanted = {"build_version": DEFAULT_BUILD_VERSION, "projector_weights": projector.name if projector else None,
              "projector_sha1": _file_digest(projector) if projector else None,  # a re-trained file rebuilds
              "config_kwargs": config_kwargs, "encoder": rest[0] if rest else DEFAULT_ENCODER}
    if info and all(info.get(k) == v for k, v in wanted.items()) and (out / "model.safetensors").exists():
        return out
    return None
