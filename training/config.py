"""Run configuration of a distillation run (YAML -> dataclasses): losses, what trains, data, Trainer arguments."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml


@dataclass
class LossConfig:
    ntp: float = 0.5
    logit: float = 0.5
    feature: float = 1.0
    temperature: float = 1.0
    feature_layers: list[int] = field(default_factory=lambda: [-1])
    def __post_init__(self):
        if any(w < 0 for w in (self.ntp, self.logit, self.feature)):
            raise ValueError("Loss weights must be >= 0.")
        if self.ntp + self.logit + self.feature == 0:
            raise ValueError("All loss weights are 0: nothing would train.")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0.")
        if 0 in self.feature_layers:
            raise ValueError(
                "feature_layers contains 0: layer 0 is the token embeddings, identical for both prompts, so its loss is always zero."
            )


@dataclass
class TrainableConfig:
    encoder: str = "frozen"  # frozen | full | lora
    # frozen | lora (peft, merged into the LLM at the end: text prompts change too) | audio_lora (the model's own
    # adapter, active only for prompts with audio: text prompts keep the untouched LLM; audio_lora.py)
    llm: str = "frozen"
    # full: every projector parameter; temperature: only the token mixture's temperature (asr_token_mixture models)
    projector: str = "full"
    # the front end's pretrained adapter module (qformer: the copy of Whisper's decoder): full | lora (small
    # checkpoints; the queries and the projector train fully either way)
    adapter: str = "full"
    adapter_lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"])
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    encoder_lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "out_proj"])
    llm_lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])

    def __post_init__(self):
        if self.encoder not in ("frozen", "full", "lora"):
            raise ValueError(f"trainable.encoder must be frozen, full or lora; got {self.encoder!r}.")
        if self.projector not in ("full", "temperature"):
            raise ValueError(f"trainable.projector must be full or temperature; got {self.projector!r}.")
        if self.adapter not in ("full", "lora"):
            raise ValueError(f"trainable.adapter must be full or lora; got {self.adapter!r}.")
        if self.llm not in ("frozen", "lora", "audio_lora"):
            raise ValueError(f"trainable.llm must be frozen, lora or audio_lora (the LLM is never fully trained); got {self.llm!r}.")


@dataclass
class DataConfig:
    train: str = ""  # a datasets.save_to_disk directory (or DatasetDict with train/validation)
    validation: str | None = None
    audio_column: str = "audio"
    transcript_column: str = "transcript"
    prompt_column: str = "prompt"
    response_column: str = "response"
    # per-row [start_s, end_s] word spans (python -m audio_minichat.dataprep with word_spans), read only by
    # models that pool over spans (audio_frontend="ctc_pool"), which need it
    spans_column: str = "word_spans"
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    # Train from cached frozen work (training/feature_cache.py): the front end's stage-1 features and the teacher's
    # targets, computed once per row into this folder and reused by every run on the same data (needs a frozen
    # encoder). null: compute everything at every step.
    cache_dir: str | None = None
    cache_topk: int = 64  # teacher tokens kept per response position (the vocabulary: exact)
    # Rows to train on, by prompt: a regular expression the prompt must NOT match (e.g. leave the dense-target rows
    # of a data set out of a baseline run). null: every row.
    exclude_prompts: str | None = None


@dataclass
class RunConfig:
    model: str = ""  # AudioMiniChat checkpoint directory (complete: frozen parts included)
    output_dir: str = "runs/default"
    losses: LossConfig = field(default_factory=LossConfig)
    trainable: TrainableConfig = field(default_factory=TrainableConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: dict = field(default_factory=dict)  # TrainingArguments fields
    sample_generations: int = 2
    # Keep frozen weights in this dtype (e.g. bfloat16: half the memory, ~2x faster on CPU) while
    # trainable weights stay float32 for the optimizer. None keeps the checkpoint's dtype.
    frozen_dtype: str | None = None
    # Trained weights to start from (a trained-weights file: projector, encoder LoRA pairs merged, see
    # utils.trained_weights.apply_trained_weights), applied to `model` before anything is made trainable: a later
    # stage continues an earlier one.
    init_weights: str | None = None
    # Learning-rate multipliers by parameter name (regular expression -> factor): e.g. a temperature that must move
    # far in few steps beside weights that must move little. Each must match a trainable parameter.
    lr_multipliers: dict = field(default_factory=dict)
    # Stop after this many minutes of the process's CPU time, across resumed sittings (training/budget.py), saving
    # and evaluating at that step; None: max_steps / epochs alone decide.
    cpu_budget_minutes: float | None = None

    @classmethod
    def from_dict(cls, raw: dict) -> "RunConfig":
        raw = dict(raw)
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"Unknown config keys {sorted(unknown)}; expected some of {sorted(known)}.")
        return cls(
            model=raw.get("model", ""),
            output_dir=raw.get("output_dir", "runs/default"),
            losses=LossConfig(**raw.get("losses", {})),
            trainable=TrainableConfig(**raw.get("trainable", {})),
            data=DataConfig(**raw.get("data", {})),
            training=dict(raw.get("training", {})),
            sample_generations=int(raw.get("sample_generations", 2)),
            frozen_dtype=raw.get("frozen_dtype"),
            init_weights=raw.get("init_weights"),
            lr_multipliers={str(k): float(v) for k, v in (raw.get("lr_multipliers") or {}).items()},
            cpu_budget_minutes=None if raw.get("cpu_budget_minutes") is None else float(raw["cpu_budget_minutes"]),
        )

    @classmethod
    def from_yaml(cls, path: str) -> "RunConfig":
        """A run config file. ``base: other.yaml`` (relative to the file) inherits that file's settings: mappings merge
        key by key (the file's own values win), anything else is replaced; relative paths are relative to the file
        that names them."""
        return cls.from_dict(read_config_file(path))

    def to_dict(self) -> dict:
        return asdict(self)


# Settings that name files: relative values are relative to the config file that holds them (a folder for the cache is
# made on first use, so it is resolved whether or not it exists yet).
PATH_SETTINGS = ((None, "model"), (None, "init_weights"), ("data", "train"), ("data", "validation"), ("data", "cache_dir"))


def merge_settings(base: dict, own: dict) -> dict:
    """``own`` over ``base``: mappings merged key by key, anything else replaced."""
    out = dict(base)
    for key, value in own.items():
        out[key] = merge_settings(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_config_file(path: str, seen: tuple = ()) -> dict:
    """A config file's settings with its ``base:`` chain merged in and its relative paths resolved."""
    where = Path(path).resolve()
    if where in seen:
        raise ValueError(f"{path}: its base: chain comes back to itself ({' -> '.join(str(p) for p in (*seen, where))}).")
    if not where.is_file():
        raise ValueError(f"{path}: no such config file" + (f" (the base: of {seen[-1]})" if seen else "") + ".")
    with open(where, encoding="utf-8") as fh:
        raw = yaml.safe_load(fh) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of settings, got {type(raw).__name__}.")
    folder = where.parent
    for section, name in PATH_SETTINGS:
        holder = raw if section is None else raw.get(section)
        value = holder.get(name) if isinstance(holder, dict) else None
        if not isinstance(value, str) or not value:
            continue
        if value.startswith("~"):
            value = os.path.expanduser(value)
        if not os.path.isabs(value) and ((folder / value).exists() or name == "cache_dir"):
            value = str((folder / value).resolve())
        holder[name] = value
    base = raw.pop("base", None)
    if base is None:
        return raw
    return merge_settings(read_config_file(str(folder / os.path.expanduser(str(base))), (*seen, where)), raw)


__all__ = ["LossConfig", "TrainableConfig", "DataConfig", "RunConfig", "merge_settings", "read_config_file"]
