"""Trained weights (a run's ``trained_weights.safetensors``, or a shipped ``assets/weights/`` file) applied to an
assembled model, in place: used by the default's build (assets/) and by training (init_weights, rebuilding a model
from a checkpoint), so it sits below both.
"""

from __future__ import annotations

import os

import torch


def apply_trained_weights(model, path: str | os.PathLike) -> dict[str, int]:
    """Load shipped trained weights (a trained-weights safetensors file) into an assembled model, in place.

    The file holds the projector (``projector.*``, required), optionally LoRA pairs of the encoder
    (``...<module>.lora_A.<adapter>.weight`` / ``lora_B``; merged into the module's weight as
    ``W += B @ A * lora_scaling``, the scaling read from the file's metadata) and optionally fully trained
    tensors by their model names. Returns how many tensors of each kind were applied. ``model``: an
    ``AudioMiniChatForConditionalGeneration`` (read through its ``config.audio_frontend``, ``projector`` and parameters).
    """
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
        state = {k: fh.get_tensor(k) for k in fh.keys()}
    trained_for = meta.get("audio_frontend", meta.get("downsample"))  # "downsample": files written before the rename
    if trained_for is not None and trained_for != model.config.audio_frontend:
        raise ValueError(
            f"{path}: these weights were trained for audio_frontend={trained_for!r} but the model uses "
            f"audio_frontend={model.config.audio_frontend!r} (build the matching variant)."
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


__all__ = ["apply_trained_weights"]
