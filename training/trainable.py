"""What trains: freezing, LoRA (peft) on the encoder and/or the LLM, per-parameter learning rates, dtypes."""

from __future__ import annotations

import re

import torch

from .config import TrainableConfig

# Where LoRA may go, by part of the model (module-name prefixes; targets come from TrainableConfig).
LORA_SCOPES = {"encoder": r"audio_frontend\.encoder\.", "llm": r"language_model\."}


def lora_layers(module: torch.nn.Module):
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in module.modules() if isinstance(m, BaseTunerLayer)]


def lora_config(cfg: TrainableConfig, adapter_scope: str | None = None):
    """The peft ``LoraConfig`` of a run: one adapter over the parts ``cfg`` puts LoRA on (None without LoRA);
    ``adapter_scope``: the front end's module that ``trainable.adapter: lora`` adapts (its ``adapter_lora_scope``)."""
    from peft import LoraConfig

    patterns = []
    if cfg.adapter == "lora":
        if adapter_scope is None:
            raise ValueError("trainable.adapter: lora needs a front end with a pretrained adapter module (audio_frontend qformer).")
        patterns.append(rf"audio_frontend\.{adapter_scope}\..*\.({'|'.join(cfg.adapter_lora_targets)})")
    if cfg.encoder == "lora":
        patterns.append(rf"{LORA_SCOPES['encoder']}.*\.({'|'.join(cfg.encoder_lora_targets)})")
    if cfg.llm == "lora":
        patterns.append(rf"{LORA_SCOPES['llm']}.*\.({'|'.join(cfg.llm_lora_targets)})")
    if not patterns:
        return None
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules="|".join(patterns))


def configure_trainable(model, cfg: TrainableConfig) -> list[str]:
    """Freeze/unfreeze/LoRA-wrap parts of ``model`` in place; return the trainable parameter names."""
    frontend = model.audio_frontend
    if cfg.encoder != "frozen" and not frontend.encoder_trainable:
        raise ValueError(
            f"trainable.encoder: {cfg.encoder!r} with audio_frontend={frontend.name!r}: its audio embeddings come from greedy "
            "ASR decoding, which passes no gradient to the encoder; use trainable.encoder: frozen."
        )
    model.requires_grad_(False)
    lora = lora_config(cfg, frontend.adapter_lora_scope)
    if lora is not None:
        from peft import inject_adapter_in_model

        inject_adapter_in_model(lora, model)
        model.requires_grad_(False)
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.requires_grad_(True)
    if cfg.projector == "temperature":
        if not hasattr(model.projector, "log_temperature"):
            raise ValueError("trainable.projector: temperature needs a token-mixture model (audio_frontend='asr_tokens', asr_token_mixture > 0).")
        model.projector.log_temperature.requires_grad_(True)
    else:
        # the projector (and the queries and querying transformer of qformer: its LoRA alone with adapter: lora)
        for param in frontend.adapter_parameters(full=cfg.adapter == "full"):
            param.requires_grad_(True)
    if cfg.llm == "audio_lora":
        if model.audio_lora is None:
            model.add_audio_lora({"r": cfg.lora_r, "alpha": cfg.lora_alpha, "targets": cfg.llm_lora_targets})
        model.audio_lora.requires_grad_(True)
    if cfg.encoder == "full":
        model.audio_encoder.requires_grad_(True)
    return [n for n, p in model.named_parameters() if p.requires_grad]


def merge_lora(model: torch.nn.Module) -> int:
    """Merge every LoRA layer into its base weight and put the plain base layer back; returns how many."""
    layers = lora_layers(model)
    for layer in layers:
        layer.merge()
    names = [name for name, module in model.named_modules() if module in layers]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, getattr(parent, child).get_base_layer())
    return len(names)


def cast_frozen(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Frozen parameters and buffers to ``dtype``; trainable parameters stay float32."""
    model.to(dtype)
    for param in model.parameters():
        if param.requires_grad:
            param.data = param.data.float()


class AdaptersOff:
    """Run the teacher on the frozen base LLM: LoRA layers of the LLM disabled inside the block."""

    def __init__(self, module: torch.nn.Module):
        self.layers = lora_layers(module) if any("lora_" in n for n, _ in module.named_parameters()) else []

    def __enter__(self):
        for layer in self.layers:
            layer.enable_adapters(False)

    def __exit__(self, *exc):
        for layer in self.layers:
            layer.enable_adapters(True)  # marks adapter weights trainable again, as they were


def apply_lr_multipliers(optimizer: torch.optim.Optimizer, named_parameters, scales: dict[str, float]) -> None:
    """Move parameters whose name matches a pattern of ``scales`` into their own groups at ``lr * factor``
    (first matching pattern wins); a pattern that matches no optimized parameter is an error."""
    names = {id(p): n for n, p in named_parameters}
    used, added = set(), []
    for group in list(optimizer.param_groups):
        keep, moved = [], {}
        for param in group["params"]:
            name = names.get(id(param), "")
            pattern = next((pat for pat in scales if re.search(pat, name)), None)
            if pattern is None:
                keep.append(param)
            else:
                moved.setdefault(pattern, []).append(param)
                used.add(pattern)
        group["params"] = keep
        for pattern, params in moved.items():
            added.append({**{k: v for k, v in group.items() if k != "params"}, "params": params, "lr": group["lr"] * scales[pattern]})
    unused = sorted(set(scales) - used)
    if unused:
        raise ValueError(f"lr_multipliers patterns {unused} match no trainable parameter.")
    optimizer.param_groups[:] = [g for g in optimizer.param_groups if g["params"]]
    for group in added:
        optimizer.add_param_group(group)


__all__ = ["configure_trainable", "cast_frozen", "merge_lora", "lora_config", "lora_layers", "AdaptersOff", "apply_lr_multipliers"]
