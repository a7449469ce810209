"""``DistillationTrainer``: ``transformers.Trainer`` whose loss is the paper's objective (``losses.py``)."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import torch
from safetensors.torch import load_file
from transformers import Trainer

from ..utils.io import atomic_save_tensors, atomic_write_json
from .budget import CpuBudgetCallback, CpuClock
from .checkpoints import flatten_state, jsonable, share_checkpoint_modes, unflatten_state, write_run_info
from .config import LossConfig, RunConfig
from .losses import CACHED_PREFIX, cached_distillation_step, distillation_step
from .trainable import apply_lr_multipliers


class DistillationTrainer(Trainer):
    """Trainer whose loss is the weighted sum of next-token, logit and feature distillation terms.

    Checkpoints are small and safetensors-only. The model part goes through transformers' own save and resume
    (``save_pretrained`` / ``_load_from_checkpoint`` read ``model.safetensors`` safely): the frozen tensors are the
    model's ``_keys_to_ignore_on_save``, so a checkpoint holds the trainable ones only (~1 MB, not the frozen
    LLM) and resuming loads exactly those. Optimizer, scheduler and RNG state, which transformers would pickle,
    are written as safetensors / JSON here (FSDP and DeepSpeed keep their own sharded formats).
    ``train_trainer.py`` writes the complete model at the end.
    """

    def __init__(self, *args, loss_config: LossConfig, run_config: RunConfig | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_config = loss_config
        self.run_config = run_config
        # Our loss is already a per-sample mean: the Trainer must divide by gradient-accumulation steps.
        self.model_accepts_loss_kwargs = False
        self._term_sums: dict[str, float] = {}
        self._term_count = 0
        # CPU seconds used (across resumed sittings): logged as cpu_s; run_config.cpu_budget_minutes ends the run
        self.cpu_clock = CpuClock()
        self.add_callback(CpuBudgetCallback(self.cpu_clock, run_config.cpu_budget_minutes if run_config else None))
        base = self.base_model
        trainable = {n for n, p in base.named_parameters() if p.requires_grad}
        base._keys_to_ignore_on_save = {k for k in base.state_dict() if k not in trainable}

    @property
    def base_model(self):
        return self.accelerator.unwrap_model(self.model)

    def create_optimizer(self, model=None):
        """The Trainer's AdamW over the trainable parameters, with ``RunConfig.lr_multipliers`` applied as their
        own parameter groups (the scheduler then scales every group's rate alike)."""
        fresh = self.optimizer is None
        optimizer = super().create_optimizer(model)
        scales = self.run_config.lr_multipliers if self.run_config is not None else {}
        if fresh and scales:
            apply_lr_multipliers(optimizer, (model or self.model).named_parameters(), scales)
        return optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if any(k.startswith(CACHED_PREFIX) for k in inputs):  # a feature_cache.CachedCollator batch
            loss, terms, outputs = cached_distillation_step(model, self.base_model, inputs, self.loss_config)
        else:
            loss, terms, outputs = distillation_step(model, self.base_model, inputs, self.loss_config)
        if model.training:
            for name, value in terms.items():
                self._term_sums[name] = self._term_sums.get(name, 0.0) + float(value.detach())
            self._term_count += 1
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict, *args, **kwargs) -> None:
        if self._term_count and "loss" in logs:
            for name, value in self._term_sums.items():
                logs[f"loss_{name}"] = round(value / self._term_count, 6)
            self._term_sums, self._term_count = {}, 0
        logs["cpu_s"] = round(self.cpu_clock.used(), 1)
        super().log(logs, *args, **kwargs)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """transformers' save (the trainable tensors: see the class docstring), plus how to rebuild the complete
        model and the LoRA as a peft adapter; the training arguments as JSON instead of a pickle."""
        super().save_model(output_dir, _internal_call)
        output_dir = output_dir or self.args.output_dir
        if self.args.should_save:
            write_run_info(self.base_model, output_dir, self.run_config)
            atomic_write_json(os.path.join(output_dir, "training_args.json"), json.loads(self.args.to_json_string()))
            pickled = os.path.join(output_dir, "training_args.bin")
            if os.path.exists(pickled):
                os.remove(pickled)
            share_checkpoint_modes(output_dir)  # transformers' model.safetensors is 0600: the umask's modes

    # ---- optimizer, scheduler and RNG state in safetensors / JSON (transformers writes pickles) ----------
    def _native_state(self) -> bool:
        """FSDP and DeepSpeed shard optimizer state their own way: they keep the Trainer's own files."""
        return bool(self.is_fsdp_enabled or self.is_deepspeed_enabled)

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        if self._native_state():
            return super()._save_optimizer_and_scheduler(output_dir)
        if not self.args.should_save:
            return
        tensors, meta = flatten_state(self.optimizer.state_dict())
        atomic_save_tensors(tensors, os.path.join(output_dir, "optimizer.safetensors"), {"meta": json.dumps(meta)})
        atomic_write_json(os.path.join(output_dir, "scheduler.json"), self.lr_scheduler.state_dict())

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        if self._native_state():
            return super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        path = os.path.join(checkpoint, "optimizer.safetensors")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Checkpoint {checkpoint} has no optimizer.safetensors; cannot resume exactly.")
        from safetensors import safe_open

        with safe_open(path, framework="pt") as fh:
            meta = json.loads(fh.metadata()["meta"])
        state = unflatten_state(load_file(path), meta)
        self.optimizer.load_state_dict(state)
        with open(os.path.join(checkpoint, "scheduler.json"), encoding="utf-8") as fh:
            self.lr_scheduler.load_state_dict(json.load(fh))

    def _save_rng_state(self, output_dir: str) -> None:
        # every rank writes its own file; rank 0 may not have created the checkpoint folder yet
        os.makedirs(output_dir, exist_ok=True)
        rank = self.args.process_index
        tensors = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"cuda.{i}"] = s
        np_state = np.random.get_state()
        meta = {
            "python": jsonable(random.getstate()),
            "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        }
        atomic_save_tensors(tensors, os.path.join(output_dir, f"rng_state_{rank}.safetensors"), {"meta": json.dumps(meta)})

    def _load_rng_state(self, checkpoint: str | None) -> None:
        if checkpoint is None:
            return
        path = os.path.join(checkpoint, f"rng_state_{self.args.process_index}.safetensors")
        if not os.path.isfile(path):
            return
        from safetensors import safe_open

        with safe_open(path, framework="pt") as fh:
            meta = json.loads(fh.metadata()["meta"])
        tensors = load_file(path)
        torch.set_rng_state(tensors["torch"])
        if torch.cuda.is_available():
            cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
            if cuda:
                torch.cuda.set_rng_state_all(cuda)
        py = meta["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        np_state = meta["numpy"]
        np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:]))


__all__ = ["DistillationTrainer"]
