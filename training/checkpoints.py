"""What a run writes: small trainable-only checkpoints to resume from, and a complete model at the end.

- ``checkpoint-N/`` (written by the Trainer, for ``--resume``): the trainable tensors only (``model.safetensors``),
  the LoRA weights also in peft's adapter format (``adapter_config.json`` + ``adapter_model.safetensors``, read by
  ``PeftModel.from_pretrained`` / ``load_adapter``), the model config, the processor, how to rebuild the complete
  model (``audio_minichat_training.json``), optimizer / scheduler / RNG state in safetensors / JSON.
- ``final/``: the complete model (``from_pretrained``-loadable, remote code, LoRA merged, frozen parts exactly
  the base checkpoint's), its processor, provenance in ``config.provenance`` and a model card: what the pipeline
  and ``audio-minichat --model DIR`` load, and what ships.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..assets.default_build import read_build_info, safetensors_problem, write_model_card
from ..modeling_audio_minichat import AudioMiniChatForConditionalGeneration
from ..utils.checkpoint_files import RUN_CONFIG
from ..utils.io import atomic_directory, atomic_save_tensors, atomic_write_json, share_modes
from ..utils.trained_weights import apply_trained_weights
from .config import RunConfig, TrainableConfig
from .trainable import configure_trainable, lora_config, merge_lora

TRAINABLE_WEIGHTS = "model.safetensors"  # in a checkpoint: the trainable tensors only
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# The small file that ships (assets/weights/, applied by utils.trained_weights.apply_trained_weights): the whole
# projector plus encoder LoRA pairs (or fully trained encoder tensors), with what it was trained for.
TRAINED_WEIGHTS = "trained_weights.safetensors"
PEFT_ADAPTER = "default"  # the adapter name inject_adapter_in_model gives
PEFT_SUBFOLDER = "lora_adapter"  # final/: the LoRA of a run as a peft adapter (already merged into final's weights)
# Written last by the Trainer into each checkpoint: a checkpoint without it is incomplete (killed while saving).
COMPLETE_MARKER = "trainer_state.json"
# Optimizer state as FSDP / DeepSpeed keep it (the Trainer's own files), in place of optimizer.safetensors.
NATIVE_OPTIMIZER_STATE = ("optimizer.pt", "optimizer.bin", "optimizer_0", "pytorch_model_fsdp_0")


def jsonable(obj):
    if isinstance(obj, tuple):
        return [jsonable(o) for o in obj]
    return obj


def flatten_state(state: dict) -> tuple[dict, dict]:
    tensors, scalars = {}, {}
    for pid, pstate in state["state"].items():
        for key, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_state(tensors: dict, meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in list(tensors.items()) + list(meta["scalars"].items()):
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def trainable_tensors(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_trainable(model, output_dir: str, run_config: RunConfig | None) -> None:
    """Write the trainable weights alone (``model.safetensors``), the model config and how to rebuild the
    complete model (what a Trainer checkpoint holds; see ``DistillationTrainer``)."""
    os.makedirs(output_dir, exist_ok=True)
    atomic_save_tensors(trainable_tensors(model), os.path.join(output_dir, TRAINABLE_WEIGHTS), {"format": "pt"})
    model.config.save_pretrained(output_dir)
    write_run_info(model, output_dir, run_config)


def write_run_info(model, output_dir: str, run_config: RunConfig | None) -> None:
    """How to rebuild the complete model from a trainable-only checkpoint (and its LoRA as a peft adapter)."""
    weights = trainable_tensors(model)
    info = {"trainable": sorted(weights)}
    if run_config is not None:
        info.update(base_model=run_config.model, trainable_config=asdict(run_config.trainable), init_weights=run_config.init_weights)
        save_peft_adapter(weights, run_config.trainable, output_dir, model.audio_frontend.adapter_lora_scope)
    atomic_write_json(os.path.join(output_dir, RUN_CONFIG), info)


def save_peft_adapter(weights: dict[str, torch.Tensor], cfg: TrainableConfig, output_dir: str,
                      adapter_scope: str | None = None) -> bool:
    """LoRA tensors in peft's adapter layout (keys ``base_model.model.<module>.lora_A.weight``); False without LoRA."""
    lora = lora_config(cfg, adapter_scope)
    pairs = {k: v for k, v in weights.items() if ".lora_A." in k or ".lora_B." in k}
    if lora is None or not pairs:
        return False
    adapter = {"base_model.model." + k.replace(f".{PEFT_ADAPTER}.", "."): v for k, v in pairs.items()}
    os.makedirs(output_dir, exist_ok=True)
    atomic_save_tensors(adapter, os.path.join(output_dir, ADAPTER_WEIGHTS), {"format": "pt"})
    lora.save_pretrained(output_dir)
    return True


def save_trained_weights(trained: dict[str, torch.Tensor], model, run_config: RunConfig, path: Path, provenance: dict) -> Path:
    """The shippable trained weights of a run: the whole projector (frozen parts from ``model``), encoder LoRA
    pairs or fully trained encoder tensors; metadata: the front end it reads and the LoRA scaling. LLM LoRA is
    left out (the default answers text exactly as the base LLM; it is merged in ``final/`` only)."""
    projector = {f"audio_frontend.projector.{k}": v.detach().cpu().contiguous() for k, v in model.projector.state_dict().items()}
    weights = {**{k.removeprefix("audio_frontend."): v for k, v in projector.items()},
               **{k: v for k, v in trained.items() if not k.startswith(("language_model.", "audio_frontend.projector."))}}
    metadata = {"format": "pt", "audio_frontend": model.config.audio_frontend}
    if any(".lora_A." in k for k in weights):
        metadata["lora_scaling"] = repr(float(run_config.trainable.lora_alpha) / float(run_config.trainable.lora_r))
    atomic_save_tensors(weights, path, metadata)
    atomic_write_json(path.with_suffix(".json"), {"tensors": {k: list(v.shape) for k, v in weights.items()}, **provenance})
    return path


def share_checkpoint_modes(output_dir: str) -> None:
    """Give a checkpoint folder the modes of ordinary files under the umask (0644 / 0755 for umask 022):
    transformers' safetensors save writes model.safetensors 0600, unreadable to the others who share a run."""
    share_modes(output_dir)


def resume_problem(checkpoint: str) -> str | None:
    """Why ``checkpoint`` (a ``--resume PATH``) cannot be resumed from, in one line naming what is missing or cut
    short; None when it holds what resuming reads: the Trainer's state (written last, so a checkpoint killed while
    being written lacks it), the trainable tensors whole, and the optimizer and scheduler state."""
    where = repr(str(checkpoint))
    if not os.path.isdir(checkpoint):
        return f"--resume {where} is not a folder" if os.path.exists(checkpoint) else f"--resume {where} does not exist"
    if os.path.isfile(os.path.join(checkpoint, "config.json")) and not os.path.isfile(os.path.join(checkpoint, RUN_CONFIG)):
        return f"--resume {where} is a complete model, not a training checkpoint: give a run's checkpoint-N folder"
    needed = [COMPLETE_MARKER, TRAINABLE_WEIGHTS]
    if not any(os.path.exists(os.path.join(checkpoint, name)) for name in NATIVE_OPTIMIZER_STATE):
        needed += ["optimizer.safetensors", "scheduler.json"]
    missing = [name for name in needed if not os.path.isfile(os.path.join(checkpoint, name))]
    if missing:
        return (f"--resume {where} is not a complete checkpoint: {', '.join(missing)} missing (a run killed while "
                "saving it? --resume without PATH takes the last complete one)")
    problem = safetensors_problem(os.path.join(checkpoint, TRAINABLE_WEIGHTS))
    if problem is not None:
        return f"--resume {where} is not a complete checkpoint: {TRAINABLE_WEIGHTS} is {problem}"
    return None


def load_trainable(model, checkpoint: str) -> None:
    """Load a checkpoint's trainable weights into ``model`` (already configured the same way); strict."""
    path = os.path.join(checkpoint, TRAINABLE_WEIGHTS)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{checkpoint} holds no {TRAINABLE_WEIGHTS}.")
    weights = load_file(path)
    params = dict(model.named_parameters())
    missing = sorted(set(weights) - set(params))
    if missing:
        raise KeyError(f"{path}: weights {missing[:5]} are not in the model (different trainable setup?).")
    with torch.no_grad():
        for name, value in weights.items():
            if params[name].shape != value.shape:
                raise ValueError(f"{path}: {name} has shape {tuple(value.shape)}, model expects {tuple(params[name].shape)}.")
            params[name].copy_(value.to(params[name].dtype))


def _base_with(base_model: str, init_weights: str | None, trainable: TrainableConfig, dtype=None):
    """The base checkpoint (exact frozen parts) with a run's starting weights and trainable setup."""
    model = AudioMiniChatForConditionalGeneration.from_pretrained(base_model, dtype=dtype)
    if init_weights:  # the run started from earlier trained weights: the frozen parts include them
        apply_trained_weights(model, init_weights)
    configure_trainable(model, trainable)
    return model


def load_trained_model(checkpoint: str, base_model: str | None = None, dtype=None):
    """A complete model from a trainable-only checkpoint: the base checkpoint's frozen parts + trained weights."""
    with open(os.path.join(checkpoint, RUN_CONFIG), encoding="utf-8") as fh:
        info = json.load(fh)
    base = base_model or info.get("base_model")
    if not base:
        raise ValueError(f"{checkpoint}: no base model recorded; pass base_model.")
    model = _base_with(base, info.get("init_weights"), TrainableConfig(**info.get("trainable_config", {})), dtype)
    load_trainable(model, checkpoint)
    return model.eval()


def save_final_model(trained_model, processor, run_config: RunConfig, out_dir: str, log_history: list[dict]) -> Path:
    """The complete trained model in ``out_dir`` (written beside and swapped in): the base checkpoint's frozen
    parts, the trained tensors of ``trained_model``, LoRA merged; provenance in ``config.provenance``; a model card."""
    model = _base_with(run_config.model, run_config.init_weights, run_config.trainable)
    trained = trainable_tensors(trained_model)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in trained.items():
            params[name].copy_(value.to(params[name].dtype))
    merged = merge_lora(model)  # (the projector is read after: merging never touches it)
    model.requires_grad_(False)
    base_info = read_build_info(run_config.model)
    evals = [h for h in log_history if any(k.startswith("eval_ppl") for k in h)]
    steps = max((h.get("step", 0) for h in log_history), default=0)
    model.config.provenance = {
        **base_info,
        "projector_trained": True,
        "projector_note": None,
        "projector_weights": None,
        "projector_sha1": None,
        "training": {
            "base_model": Path(run_config.model).name, "init_weights": Path(run_config.init_weights).name if run_config.init_weights else None,
            "losses": asdict(run_config.losses), "trainable": asdict(run_config.trainable), "training_args": run_config.training,
            "data": Path(run_config.data.train).name, "steps": steps, "lora_merged": merged,
            "last_eval": evals[-1] if evals else None,
        },
    }
    with atomic_directory(out_dir) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        # in a subfolder: transformers' from_pretrained would apply an adapter_config.json beside the merged weights
        save_peft_adapter(trained, run_config.trainable, str(tmp / PEFT_SUBFOLDER), model.audio_frontend.adapter_lora_scope)
        save_trained_weights(trained, model, run_config, tmp / TRAINED_WEIGHTS, model.config.provenance["training"])
        atomic_write_json(tmp / "log_history.json", log_history)
        write_model_card(tmp, model.config)
    return Path(out_dir)


__all__ = ["TRAINABLE_WEIGHTS", "RUN_CONFIG", "COMPLETE_MARKER", "resume_problem", "share_checkpoint_modes", "save_trainable", "save_peft_adapter", "load_trainable", "load_trained_model",
           "save_final_model", "save_trained_weights", "trainable_tensors", "TRAINED_WEIGHTS"]
