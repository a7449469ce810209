"""Modality-invariance distillation (Kang & Roy, 2024) on ``transformers.Trainer``; ``train_trainer.py`` runs it."""

from .checkpoints import load_trainable, load_trained_model, save_final_model, save_trainable
from .cli import build_trainer, latest_checkpoint, load_rows, main
from .collator import DistillationCollator, decode_audio, split_batch
from .config import DataConfig, LossConfig, RunConfig, TrainableConfig
from .losses import distillation_losses, distillation_step, response_mask, total_loss
from .trainable import apply_lr_multipliers, cast_frozen, configure_trainable, merge_lora
from .trainer import DistillationTrainer
from .validation import ValidationCallback, response_perplexity

__all__ = [
    "DataConfig", "DistillationCollator", "DistillationTrainer", "LossConfig", "RunConfig", "TrainableConfig",
    "ValidationCallback", "apply_lr_multipliers", "build_trainer", "cast_frozen", "configure_trainable", "decode_audio",
    "distillation_losses", "distillation_step", "latest_checkpoint", "load_rows", "load_trainable", "load_trained_model",
    "main", "merge_lora", "response_mask", "response_perplexity", "save_final_model", "save_trainable", "split_batch", "total_loss",
]
