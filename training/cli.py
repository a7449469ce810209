"""``train_trainer.py``: build the run from a YAML config, train (or resume), write the complete model.

    accelerate launch train_trainer.py --config configs/NAME.yaml
    python train_trainer.py --config configs/NAME.yaml [--resume [CHECKPOINT]]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
from transformers import TrainingArguments

from ..modeling_audio_minichat import AudioMiniChatForConditionalGeneration
from ..processing_audio_minichat import AudioMiniChatProcessor
from ..utils.trained_weights import apply_trained_weights
from .checkpoints import COMPLETE_MARKER, resume_problem, save_final_model
from .collator import DistillationCollator
from .config import RunConfig
from .trainable import cast_frozen, configure_trainable
from .trainer import DistillationTrainer
from .validation import ValidationCallback



def load_rows(path: str, split: str, limit: int | None, exclude_prompts: str | None = None, prompt_column: str = "prompt"):
    """A split of a prepared data set (``datasets.save_to_disk``), audio left as bytes (decoded by the collator);
    ``exclude_prompts``: leave out rows whose prompt matches this regular expression."""
    import re

    from datasets import Audio, DatasetDict, load_from_disk

    ds = load_from_disk(path)
    if isinstance(ds, DatasetDict):
        if split not in ds:
            raise KeyError(f"{path} has splits {list(ds)}; expected {split!r}.")
        ds = ds[split]
    if exclude_prompts:
        pattern = re.compile(exclude_prompts)
        ds = ds.select([i for i, p in enumerate(ds[prompt_column]) if not pattern.search(p)])
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    for name, feature in ds.features.items():
        if isinstance(feature, Audio) and feature.decode:
            ds = ds.cast_column(name, Audio(sampling_rate=feature.sampling_rate, decode=False))
    return ds


def _validation_rows(cfg: RunConfig):
    d = cfg.data
    source = d.validation or d.train
    try:  # a DatasetDict with a validation split
        # every run validates on the same rows: exclude_prompts thins the training rows only
        return source, load_rows(source, "validation", d.max_eval_samples)
    except KeyError:
        if d.validation:
            raise
        return source, None


def build_trainer(cfg: RunConfig) -> DistillationTrainer:
    if not cfg.model:
        raise ValueError("The config needs `model`: an AudioMiniChat checkpoint directory.")
    if not cfg.data.train:
        raise ValueError("The config needs `data.train`: a datasets directory (python -m audio_minichat.dataprep output).")
    processor = AudioMiniChatProcessor.from_pretrained(cfg.model)
    model = AudioMiniChatForConditionalGeneration.from_pretrained(cfg.model)
    if cfg.init_weights:
        if not os.path.isfile(cfg.init_weights):
            raise FileNotFoundError(f"init_weights: {cfg.init_weights!r} does not exist (a trained-weights safetensors file)")
        apply_trained_weights(model, cfg.init_weights)
    trainable = configure_trainable(model, cfg.trainable)
    if cfg.frozen_dtype:
        cast_frozen(model, getattr(torch, cfg.frozen_dtype))
    d = cfg.data
    train = load_rows(d.train, "train", d.max_train_samples, d.exclude_prompts, d.prompt_column)
    val_source, val = _validation_rows(cfg)
    defaults = dict(
        output_dir=cfg.output_dir, remove_unused_columns=False, report_to=["tensorboard"], logging_steps=10,
        save_strategy="steps", save_steps=200, lr_scheduler_type="linear", warmup_steps=0.05, learning_rate=1e-3,
        optim="adamw_torch", per_device_train_batch_size=8, per_device_eval_batch_size=8, dataloader_num_workers=0,
        seed=0, data_seed=0, prediction_loss_only=True,
    )
    defaults.update(cfg.training)
    if val is None:
        defaults["eval_strategy"] = "no"
    else:
        defaults.setdefault("eval_strategy", "steps")
        defaults.setdefault("eval_steps", defaults["save_steps"])
    args = TrainingArguments(**defaults)
    collator = audio_collator = DistillationCollator(processor, cfg.data)
    train_set, val_set = train, val
    if d.cache_dir:  # the frozen work once per row (training/feature_cache.py); the trainable stage and student only
        from .feature_cache import CachedCollator, prepare_cached_split

        model.to(args.device)
        train_set = prepare_cached_split(model, processor, train, d.train, "train", d, cfg.losses, d.cache_dir, d.cache_topk)
        if val is not None:
            val_set = prepare_cached_split(model, processor, val, val_source, "validation", d, cfg.losses, d.cache_dir, d.cache_topk)
        collator = CachedCollator(processor, d, cfg.losses.feature_layers)
    trainer = DistillationTrainer(
        model=model, args=args, train_dataset=train_set, eval_dataset=val_set, data_collator=collator,
        processing_class=processor, loss_config=cfg.losses, run_config=cfg,
    )
    if val is not None:
        # Trainer's own evaluation loop computes the distillation loss; the callback adds perplexities.
        trainer.add_callback(ValidationCallback(trainer, [val[i] for i in range(len(val))], audio_collator, cfg.sample_generations))
    if trainer.is_world_process_zero():
        n_train = sum(p.numel() for n, p in model.named_parameters() if n in set(trainable))
        print(f"[train] trainable parameters: {n_train:,} in {len(trainable)} tensors; "
              f"frozen: {sum(p.numel() for p in model.parameters()) - n_train:,}; world size {args.world_size}", file=sys.stderr)
    return trainer


def checkpoints(output_dir: str) -> list[tuple[int, str, bool]]:
    """(step, path, complete) of every ``checkpoint-N`` folder, by step."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        step = name.removeprefix("checkpoint-")
        if name.startswith("checkpoint-") and step.isdigit():
            path = os.path.join(output_dir, name)
            found.append((int(step), path, os.path.isfile(os.path.join(path, COMPLETE_MARKER))))
    return sorted(found)


def latest_checkpoint(output_dir: str) -> str | None:
    """The last *complete* checkpoint (one killed while being written is skipped)."""
    complete = [path for _, path, ok in checkpoints(output_dir) if ok]
    return complete[-1] if complete else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML run config (see configs/)")
    parser.add_argument("--resume", nargs="?", const="latest", default=None,
                        help="resume from CHECKPOINT, or from the latest complete checkpoint in output_dir")
    parser.add_argument("--output-dir", default=None, help="override output_dir")
    parser.add_argument("--max-steps", type=int, default=None, help="override training.max_steps")
    parser.add_argument("--cpu-budget-minutes", type=float, default=None,
                        help="override cpu_budget_minutes (CPU time across sittings; raise it and --resume to train further)")
    parser.add_argument("--cache-only", action="store_true",
                        help="build the config's data.cache_dir caches (features and teacher targets) and stop")
    args = parser.parse_args(argv)
    cfg = RunConfig.from_yaml(args.config)
    if args.output_dir:
        cfg.output_dir = args.output_dir
    if args.max_steps is not None:
        cfg.training["max_steps"] = args.max_steps
    if args.cpu_budget_minutes is not None:
        cfg.cpu_budget_minutes = args.cpu_budget_minutes
    if args.cache_only:
        if not cfg.data.cache_dir:
            raise SystemExit(f"{args.config}: --cache-only needs data.cache_dir in the config")
        build_trainer(cfg)  # builds (or finds) every cache the run reads
        return 0
    existing = latest_checkpoint(cfg.output_dir)
    if checkpoints(cfg.output_dir) and args.resume is None:
        # a fresh run would mix its checkpoints (and their rotation) with another run's
        name = os.path.basename(existing or checkpoints(cfg.output_dir)[-1][1])
        raise SystemExit(f"{cfg.output_dir} already holds checkpoints ({name}): pass --resume to "
                         "continue that run, or --output-dir for a new one.")
    if args.resume not in (None, "latest") and (problem := resume_problem(args.resume)) is not None:
        print(f"error: {problem}", file=sys.stderr)  # one line, before the model is built
        return 2
    trainer = build_trainer(cfg)
    resume = existing if args.resume == "latest" else args.resume
    trainer.train(resume_from_checkpoint=resume)
    if trainer.is_world_process_zero():
        final = save_final_model(trainer.base_model, trainer.processing_class, cfg, os.path.join(cfg.output_dir, "final"),
                                 trainer.state.log_history)
        print(f"[train] complete model: {final} (AutoModel.from_pretrained(..., trust_remote_code=True), audio-minichat --model)",
              file=sys.stderr)
    # every rank leaves together and closes the process group: a rank that exits while another still holds
    # gloo connections can make that one abort
    trainer.accelerator.wait_for_everyone()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0


__all__ = ["build_trainer", "load_rows", "latest_checkpoint", "main"]
