"""Ship trained weights: copy a checkpoint's trainable tensors into weights/default_projector.safetensors.

    python scripts/export_projector.py runs/default/final [--out weights/default_projector.safetensors]

Writes the trainable tensors (safetensors: the projector, plus encoder LoRA pairs or fully trained encoder
tensors when the run trained them; LLM LoRA is refused: the default must answer text exactly as the base
LLM) and a JSON with their provenance (run config, steps, last logged training and validation figures).
`audio-minichat build-default` picks them up (`default_model.apply_trained_weights` merges LoRA pairs).
"""

import argparse
import json
import os
from pathlib import Path

from safetensors.torch import load_file, save_file


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--note", default=None,
                    help="what users should know (build-default records it; every e2e answer carries it as a warning)")
    ap.add_argument("--command", default=None, help="the command (and data) that produced the checkpoint")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "weights" / "default_projector.safetensors"))
    args = ap.parse_args()
    ckpt = Path(args.checkpoint)
    weights = load_file(str(ckpt / "trainable.safetensors"))
    info = json.loads((ckpt / "audio_minichat_training.json").read_text())
    base_dir = Path(os.path.expanduser(info.get("base_model") or ""))
    # the shipped file holds the whole projector: parts the run kept frozen come from its base model
    base_weights = base_dir / "model.safetensors"
    if base_weights.is_file():
        from safetensors import safe_open

        with safe_open(str(base_weights), framework="pt") as fh:
            frozen = {k: fh.get_tensor(k) for k in fh.keys() if k.startswith("projector.") and k not in weights}
        weights.update(frozen)
    if not any(k.startswith("projector.") for k in weights):
        raise SystemExit(f"{ckpt}: no projector weights in trainable.safetensors")
    llm = [k for k in weights if k.startswith("language_model.")]
    if llm:
        raise SystemExit(f"{ckpt}: trains the LLM ({llm[0]}, ...); the shipped default keeps the LLM frozen")
    trainable = info.get("trainable_config") or {}
    metadata = {"format": "pt"}
    base_config = base_dir / "config.json"
    if base_config.is_file():  # what the projector reads: build-default refuses a file trained for another input
        metadata["downsample"] = json.loads(base_config.read_text()).get("downsample", "pool")
    if any(".lora_A." in k for k in weights):
        metadata["lora_scaling"] = repr(float(trainable["lora_alpha"]) / float(trainable["lora_r"]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, out)
    history = json.loads((ckpt / "log_history.json").read_text()) if (ckpt / "log_history.json").exists() else []
    train_logs = [h for h in history if "loss" in h]
    eval_logs = [h for h in history if "eval_ppl_audio" in h or "eval_loss" in h]
    provenance = {
        "checkpoint": str(ckpt), "tensors": {k: list(v.shape) for k, v in weights.items()},
        "base_model": info.get("base_model"), "trainable": info.get("trainable_config"),
        "last_train_log": train_logs[-1] if train_logs else None, "eval_logs": eval_logs,
        "init_weights": info.get("init_weights"),
    }
    for key in ("note", "command"):
        if getattr(args, key):
            provenance[key] = getattr(args, key)
    out.with_suffix(".json").write_text(json.dumps(provenance, indent=2))
    print(f"wrote {out} ({sum(v.numel() for v in weights.values()):,} parameters) and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
