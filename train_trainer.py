"""Modality-invariance distillation (Kang & Roy, 2024): the ``accelerate launch`` entry point.

    accelerate launch train_trainer.py --config configs/NAME.yaml
    python train_trainer.py --config configs/NAME.yaml [--resume [CHECKPOINT]]

The run is built in ``training/`` (config, losses, collator, trainable parts, trainer, checkpoints, validation);
the complete trained model lands in ``<output_dir>/final`` (``AutoModel.from_pretrained(..., trust_remote_code=True)``).
"""

from audio_minichat.training.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
