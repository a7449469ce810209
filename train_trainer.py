"""Modality-invariance distillation (Kang & Roy, 2024) as a ``transformers.Trainer`` subclass.

    accelerate launch train_trainer.py --config configs/NAME.yaml
    python train_trainer.py --config configs/NAME.yaml [--resume [CHECKPOINT]]

The student is the LLM prompted with audio embeddings; the teacher is the same frozen LLM prompted with
the transcript as text (``AudioMiniChatProcessor.build_prompt(..., transcripts=...)``). Both see the same
response (the frozen LLM's own answer to the text prompt). Losses, per sample as a mean over its response
tokens and then averaged over the batch (so a batch equals the mean of its samples, and gradient
accumulation equals the larger batch):

- next-token prediction on the response given the audio prompt (weight ``ntp``, paper 0.5);
- logit distillation: soft cross-entropy of the audio-prompt logits against the text-prompt logits,
  with temperature ``T`` (weight ``logit``, paper 0.5);
- feature distillation: MSE between LLM hidden states at ``feature_layers`` (weight ``feature``,
  paper 1.0). Layer 0 (embeddings of identical tokens) is always zero and rejected.

Response positions are aligned through the label masks of the two batches, so any batch size and
padding work. Checkpoints hold only the trainable weights (safetensors) plus optimizer, scheduler and
RNG state in safetensors/JSON: nothing is unpickled on resume.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import re
import random
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file, save_file
from transformers import Trainer, TrainerCallback, TrainingArguments

if __package__ in (None, ""):  # run as a script: import the installed package
    from audio_minichat.default_model import apply_trained_weights
    from audio_minichat.eval.wer import edit_distance
    from audio_minichat.modeling_audio_minichat import AudioMiniChatForConditionalGeneration
    from audio_minichat.processing_audio_minichat import AudioMiniChatProcessor, load_audio
else:
    from .default_model import apply_trained_weights
    from .eval.wer import edit_distance
    from .modeling_audio_minichat import AudioMiniChatForConditionalGeneration
    from .processing_audio_minichat import AudioMiniChatProcessor, load_audio

TRAINABLE_WEIGHTS = "trainable.safetensors"
RUN_CONFIG = "audio_minichat_training.json"
AUX_KEYS = ("ctc_labels", "ctc_blank", "ctc_candidates")  # collator outputs that are loss targets, not model inputs


# ---------------------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------------------
@dataclass
class LossConfig:
    ntp: float = 0.5
    logit: float = 0.5
    feature: float = 1.0
    temperature: float = 1.0
    feature_layers: list[int] = field(default_factory=lambda: [-1])
    # Alignment term (not in the paper, off by default): CTC of the transcript tokens over the audio embeddings,
    # each embedding scored against the LLM's own input embedding table by distance (see ``ctc_alignment_loss``).
    ctc: float = 0.0
    ctc_scale: float = 10.0  # logits are -ctc_scale * squared distance / 2
    ctc_blank_token: str = " "  # the token whose input embedding stands for CTC's blank
    # Companion of the ctc term: squared distance / 2 from each audio embedding to the embedding its CTC alignment
    # assigns it (the alignment posteriors' mean of the token embeddings, blank included). CTC alone only orders
    # the tokens' scores (softmax ignores |h|^2, so a large norm sharpens them), this puts embeddings ON the tokens.
    ctc_embed: float = 0.0
    # Which tokens the ctc term scores: "all" (the LLM's whole vocabulary) or "data" (only the tokens of the
    # training transcripts, plus the blank: ~3x less work for the scoring with a 49k vocabulary).
    ctc_vocab: str = "all"
    # downsample="asr_tokens" models: squared distance / 2 from each audio embedding to the LLM's input embedding
    # of the token the ASR decoder wrote there (``model.asr_token_map``): the projector learns to write the LLM's
    # own token embeddings. Needs no LLM pass, so on its own it trains fast (see ``asr_embed_loss``).
    asr_embed: float = 0.0

    def __post_init__(self):
        if any(w < 0 for w in (self.ntp, self.logit, self.feature, self.ctc, self.ctc_embed, self.asr_embed)):
            raise ValueError("Loss weights must be >= 0.")
        if self.ntp + self.logit + self.feature + self.ctc + self.ctc_embed + self.asr_embed == 0:
            raise ValueError("All loss weights are 0: nothing would train.")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0.")
        if self.ctc_scale <= 0:
            raise ValueError("ctc_scale must be > 0.")
        if self.ctc_vocab not in ("all", "data"):
            raise ValueError(f"ctc_vocab must be 'all' or 'data'; got {self.ctc_vocab!r}.")
        if 0 in self.feature_layers:
            raise ValueError(
                "feature_layers contains 0: layer 0 is the token embeddings, identical for both prompts, so its loss is always zero."
            )

    @property
    def needs_ctc(self) -> bool:
        """Whether the ctc terms run (they need the transcript tokens and the blank in each batch)."""
        return self.ctc + self.ctc_embed > 0

    @property
    def needs_audio_embeddings(self) -> bool:
        """Whether a term reads the audio embeddings themselves (the ctc terms, asr_embed)."""
        return self.needs_ctc or self.asr_embed > 0

    @property
    def needs_llm(self) -> bool:
        """Whether any term reads the LLM's output (the ctc term alone reads only the audio embeddings)."""
        return self.ntp + self.logit + self.feature > 0


@dataclass
class TrainableConfig:
    encoder: str = "frozen"  # frozen | full | lora
    llm: str = "frozen"  # frozen | lora
    # full: every projector parameter; temperature: only the token mixture's temperature (asr_token_mixture models)
    projector: str = "full"
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
        if self.llm not in ("frozen", "lora"):
            raise ValueError(f"trainable.llm must be frozen or lora (the LLM is never fully trained); got {self.llm!r}.")


@dataclass
class DataConfig:
    train: str = ""  # a datasets.save_to_disk directory (or DatasetDict with train/validation)
    validation: str | None = None
    audio_column: str = "audio"
    transcript_column: str = "transcript"
    prompt_column: str = "prompt"
    response_column: str = "response"
    max_train_samples: int | None = None
    max_eval_samples: int | None = None


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
    # Trained weights to start from (a `scripts/export_projector.py` file: projector, encoder LoRA pairs merged),
    # applied to `model` before anything is made trainable: a later stage continues an earlier one.
    init_weights: str | None = None
    # Learning-rate multipliers by parameter name (regular expression -> factor): e.g. a temperature that must move
    # far in few steps beside weights that must move little. Each must match a trainable parameter.
    lr_multipliers: dict = field(default_factory=dict)

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
        )

    @classmethod
    def from_yaml(cls, path: str) -> "RunConfig":
        with open(path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh) or {}
        base = Path(path).resolve().parent
        cfg = cls.from_dict(raw)
        # relative paths in a config are relative to the config file
        for holder, name in ((cfg, "model"), (cfg, "init_weights"), (cfg.data, "train"), (cfg.data, "validation")):
            value = getattr(holder, name)
            if value and value.startswith("~"):
                value = os.path.expanduser(value)
                setattr(holder, name, value)
            if value and not os.path.isabs(value) and (base / value).exists():
                setattr(holder, name, str((base / value).resolve()))
        return cfg

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------------------
# losses: one place
# ---------------------------------------------------------------------------------------------------------
def response_mask(labels: torch.Tensor) -> torch.Tensor:
    """Positions whose logits predict a response token: position p predicts label p + 1."""
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != -100
    return mask


def distillation_losses(
    student_logits: torch.Tensor,
    student_labels: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    teacher_labels: torch.Tensor | None,
    student_hidden: tuple | None,
    teacher_hidden: tuple | None,
    cfg: LossConfig,
) -> dict[str, torch.Tensor]:
    """Per-term losses, each a mean over samples of the per-sample mean over response tokens."""
    s_mask = response_mask(student_labels)
    s_counts = s_mask.sum(-1)
    if (s_counts == 0).any():
        raise ValueError(f"Sample(s) {torch.nonzero(s_counts == 0).flatten().tolist()} have no response tokens.")
    # sample index of each selected position, row-major: both batches list response tokens in the same order
    rows = torch.arange(student_labels.shape[0], device=student_labels.device).unsqueeze(1).expand_as(s_mask)[s_mask]

    def per_sample_mean(values: torch.Tensor) -> torch.Tensor:
        sums = torch.zeros(student_labels.shape[0], device=values.device, dtype=values.dtype).index_add(0, rows, values)
        return (sums / s_counts.to(values.dtype)).mean()

    s_logits = student_logits[s_mask].float()
    targets = student_labels[:, 1:][s_mask[:, :-1]]
    out = {"ntp": per_sample_mean(F.cross_entropy(s_logits, targets, reduction="none"))}
    if teacher_logits is not None:
        t_mask = response_mask(teacher_labels)
        if not torch.equal(t_mask.sum(-1), s_counts):
            raise ValueError(
                f"Student and teacher response lengths differ: {s_counts.tolist()} vs {t_mask.sum(-1).tolist()}."
            )
        if not torch.equal(teacher_labels[:, 1:][t_mask[:, :-1]], targets):
            raise ValueError("Student and teacher batches hold different response tokens.")
        T = cfg.temperature
        t_logits = teacher_logits[t_mask].float()
        soft_ce = -(F.softmax(t_logits / T, dim=-1) * F.log_softmax(s_logits / T, dim=-1)).sum(-1) * (T * T)
        out["logit"] = per_sample_mean(soft_ce)
        if student_hidden is not None and teacher_hidden is not None and cfg.feature_layers:
            terms = []
            for layer in cfg.feature_layers:
                s_h, t_h = student_hidden[layer][s_mask].float(), teacher_hidden[layer][t_mask].float()
                terms.append(per_sample_mean(((s_h - t_h) ** 2).mean(-1)))
            out["feature"] = torch.stack(terms).mean()
    return out


def token_scores(frames: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``-|h - e_v|^2 / 2`` for every frame ``h`` and table row ``e_v``, less the constant ``|h|^2 / 2``."""
    table = table.float()
    return frames.float() @ table.T - (table * table).sum(-1) / 2


def ctc_alignment_loss(
    audio_embeddings: list[torch.Tensor] | tuple,
    targets: torch.Tensor,
    embedding_table: torch.Tensor,
    blank_id: int,
    scale: float,
    with_embed: bool = False,
):
    """CTC of each clip's transcript tokens over its audio embeddings, per-sample mean over target tokens.

    Frame ``h`` scores token ``v`` as ``-scale * |h - e_v|^2 / 2`` (constant ``|h|^2`` dropped), with ``e_v`` the
    LLM's input embedding of ``v``; the blank is the embedding of ``blank_id``. It teaches the audio embeddings to
    point at the spoken tokens; the softmax ignores ``|h|``, so putting them onto the token embeddings (which is
    what lets the frozen LLM read the audio as it reads the transcript) is ``with_embed``'s term.
    ``targets`` is (clips, max_len) padded with -100. ``with_embed=True`` returns ``(ctc, embed)``, ``embed`` being
    ``LossConfig.ctc_embed``'s term: per clip, the mean over frames of the squared distance / 2 to the alignment's
    expected token embedding.
    """
    if len(audio_embeddings) != targets.shape[0]:
        raise ValueError(f"{len(audio_embeddings)} audio clips but {targets.shape[0]} CTC target rows.")
    table = embedding_table.float()
    frames = torch.nn.utils.rnn.pad_sequence([a.float() for a in audio_embeddings], batch_first=True)
    logits = scale * token_scores(frames, table)  # (clips, T, V); column blank_id doubles as the blank
    input_lengths = torch.tensor([a.shape[0] for a in audio_embeddings], device=frames.device)
    valid = targets != -100
    target_lengths = valid.sum(-1)
    if (target_lengths == 0).any():
        raise ValueError(f"Clip(s) {torch.nonzero(target_lengths == 0).flatten().tolist()} have an empty transcript.")
    if (targets[valid] == blank_id).any():
        raise ValueError(f"A CTC target holds the blank token id {blank_id}; choose another ctc_blank_token.")
    log_probs = logits.log_softmax(-1).transpose(0, 1)
    per_clip = F.ctc_loss(
        log_probs, targets[valid], input_lengths, target_lengths,
        blank=blank_id, reduction="none", zero_infinity=True,  # a clip too short for its transcript counts 0
    )
    ctc = (per_clip / target_lengths.to(per_clip.dtype)).mean()
    if not with_embed:
        return ctc
    # Alignment posteriors gamma[t, v] (CTC forward-backward): PyTorch's ctc_loss gradient w.r.t. normalised
    # log-probs is softmax - gamma. Each frame's target is gamma's mean of the token embeddings, held fixed.
    with torch.enable_grad():
        lp = log_probs.detach().requires_grad_()
        nll = F.ctc_loss(lp, targets[valid], input_lengths, target_lengths, blank=blank_id, reduction="none")
        feasible = torch.isfinite(nll)  # a clip too short for its transcript has no alignment: no pull
        if not feasible.any():
            return ctc, frames.sum() * 0
        (grad,) = torch.autograd.grad(nll[feasible].sum(), lp)
    # only the blank and the batch's target tokens can carry alignment mass: gather those columns
    cols = torch.unique(torch.cat([targets[valid], targets.new_tensor([blank_id])]))
    gamma = (lp.detach()[..., cols].exp() - grad[..., cols]).clamp(min=0).transpose(0, 1)  # (clips, T, |cols|)
    aligned = gamma @ table[cols]  # (clips, T, D)
    frame_valid = torch.arange(frames.shape[1], device=frames.device).unsqueeze(0) < input_lengths.unsqueeze(1)
    sq = ((frames - aligned) ** 2).sum(-1) / 2 * frame_valid
    per_clip_embed = sq.sum(-1) / input_lengths.to(sq.dtype)
    embed = (per_clip_embed * feasible).sum() / feasible.sum().clamp(min=1)
    return ctc, embed


def total_loss(terms: dict[str, torch.Tensor], cfg: LossConfig) -> torch.Tensor:
    weights = {"ntp": cfg.ntp, "logit": cfg.logit, "feature": cfg.feature, "ctc": cfg.ctc, "ctc_embed": cfg.ctc_embed,
               "asr_embed": cfg.asr_embed}
    return sum(weights[name] * value for name, value in terms.items())


# ---------------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------------
def decode_audio(value, where: str) -> np.ndarray:
    """A dataset audio cell (array dict, bytes dict from ``Audio(decode=False)``, or path) -> 16 kHz array."""
    if isinstance(value, dict) and value.get("array") is None and value.get("bytes"):
        import soundfile as sf

        try:
            data, rate = sf.read(io.BytesIO(value["bytes"]), dtype="float32", always_2d=True)
        except Exception as exc:
            raise ValueError(f"{where}: cannot decode audio bytes: {exc}") from None
        return load_audio(data, rate, name=where)
    if isinstance(value, dict) and value.get("array") is None and value.get("path"):
        return load_audio(value["path"], name=where)
    return load_audio(value, None if not isinstance(value, dict) else value.get("sampling_rate"), name=where)


class DistillationCollator:
    """Rows (audio, transcript, prompt, response) -> a student batch and the teacher's text batch."""

    def __init__(self, processor: AudioMiniChatProcessor, data_cfg: DataConfig, ctc_blank_token: str | None = None,
                 ctc_candidates: list[int] | None = None):
        """``ctc_blank_token`` (``LossConfig.ctc_blank_token``) adds ``ctc_blank`` to batches; ``ctc_candidates``
        (token ids, see ``make_collator``) adds them, with the blank, as ``ctc_candidates``."""
        self.processor = processor
        self.cfg = data_cfg
        self.ctc_blank = self.ctc_candidates = None
        if ctc_blank_token is not None:
            blank = processor.tokenizer(ctc_blank_token, add_special_tokens=False)["input_ids"]
            if len(blank) != 1:
                raise ValueError(f"ctc_blank_token {ctc_blank_token!r} is {len(blank)} tokens ({blank}); it must be exactly one.")
            self.ctc_blank = blank[0]
            if ctc_candidates is not None:
                self.ctc_candidates = torch.tensor(sorted(set(ctc_candidates) | {self.ctc_blank}), dtype=torch.long)

    def transcript_ids(self, transcripts: list[str]) -> list[list[int]]:
        """Transcript token ids as the ctc term sees them (whitespace normalised, no special tokens)."""
        texts = [" ".join(str(t).split()) for t in transcripts]
        return self.processor.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def __call__(self, rows: list[dict]) -> dict:
        c, proc = self.cfg, self.processor
        clips, audio_prompts, text_prompts, responses, transcripts = [], [], [], [], []
        for i, row in enumerate(rows):
            where = f"row {row.get('__index__', i)}"
            for col in (c.audio_column, c.transcript_column, c.prompt_column, c.response_column):
                if col not in row:
                    raise KeyError(f"{where}: missing column {col!r}; columns are {sorted(row)}.")
            prompt = row[c.prompt_column]
            if prompt.count(proc.audio_token) != 1:
                raise ValueError(f"{where}: the prompt must hold exactly one {proc.audio_token}; got {prompt!r}.")
            if not str(row[c.response_column]).strip():
                raise ValueError(f"{where}: empty response.")
            clips.append(decode_audio(row[c.audio_column], where))
            audio_prompts.append(proc.build_prompt(prompt))
            text_prompts.append(proc.build_prompt(prompt, transcripts=[row[c.transcript_column]]))
            responses.append(row[c.response_column])
            transcripts.append(row[c.transcript_column])
            if not str(transcripts[-1]).strip():
                raise ValueError(f"{where}: empty transcript.")
        rate = proc.layout.sampling_rate
        batch = dict(proc(text=audio_prompts, audio=clips, sampling_rate=rate, responses=responses, padding_side="right"))
        teacher = proc(text=text_prompts, responses=responses, padding_side="right")
        batch.update({f"teacher_{k}": v for k, v in teacher.items()})
        if self.ctc_blank is not None:
            # transcript tokens (for the ctc terms), one row per clip, padded with -100; the blank token itself
            # (e.g. the lone space before a digit) carries no content: it is dropped from the targets
            ids = [torch.tensor([i for i in t if i != self.ctc_blank], dtype=torch.long) for t in self.transcript_ids(transcripts)]
            batch["ctc_labels"] = torch.nn.utils.rnn.pad_sequence(ids, batch_first=True, padding_value=-100)
            batch["ctc_blank"] = torch.tensor(self.ctc_blank)
        if self.ctc_candidates is not None:
            batch["ctc_candidates"] = self.ctc_candidates
        return batch


def make_collator(processor: AudioMiniChatProcessor, data_cfg: DataConfig, losses: LossConfig, transcripts=()) -> "DistillationCollator":
    """The collator a loss configuration needs: with the ctc terms, their blank and (ctc_vocab: data) the tokens of
    ``transcripts`` (strings, or a callable returning them, read only then) as the scored vocabulary."""
    collator = DistillationCollator(processor, data_cfg)
    if not losses.needs_ctc:
        return collator
    candidates = None
    if losses.ctc_vocab == "data":
        texts = list(transcripts() if callable(transcripts) else transcripts)
        candidates = {i for ids in collator.transcript_ids(texts) for i in ids}
        if not candidates:
            raise ValueError("ctc_vocab: data needs the training transcripts; none were given.")
        print(f"[train] ctc scores {len(candidates):,} transcript tokens (ctc_vocab: data)", file=sys.stderr)
    return DistillationCollator(processor, data_cfg, losses.ctc_blank_token, candidates)


def split_batch(batch: dict) -> tuple[dict, dict, dict]:
    """A DistillationCollator batch -> (student inputs incl. labels, teacher inputs incl. labels, auxiliary targets)."""
    aux = {k: v for k, v in batch.items() if k in AUX_KEYS}
    teacher = {k[len("teacher_") :]: v for k, v in batch.items() if k.startswith("teacher_")}
    student = {k: v for k, v in batch.items() if not k.startswith("teacher_") and k not in AUX_KEYS}
    return student, teacher, aux


# ---------------------------------------------------------------------------------------------------------
# what trains
# ---------------------------------------------------------------------------------------------------------
def _lora_layers(module: torch.nn.Module):
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in module.modules() if isinstance(m, BaseTunerLayer)]


def configure_trainable(model: AudioMiniChatForConditionalGeneration, cfg: TrainableConfig) -> list[str]:
    """Freeze/unfreeze/LoRA-wrap parts of ``model`` in place; return the trainable parameter names."""
    if cfg.encoder != "frozen" and model.config.downsample == "asr_tokens":
        raise ValueError(
            f"trainable.encoder: {cfg.encoder!r} with downsample='asr_tokens': the audio embeddings come from greedy "
            "ASR decoding, which passes no gradient to the encoder; use trainable.encoder: frozen."
        )
    model.requires_grad_(False)
    if cfg.encoder == "lora" or cfg.llm == "lora":
        from peft import LoraConfig, inject_adapter_in_model

        patterns = []
        if cfg.encoder == "lora":
            patterns.append(rf"audio_encoder\..*\.({'|'.join(cfg.encoder_lora_targets)})")
        if cfg.llm == "lora":
            patterns.append(rf"language_model\..*\.({'|'.join(cfg.llm_lora_targets)})")
        lora = LoraConfig(
            r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules="|".join(patterns)
        )
        inject_adapter_in_model(lora, model)
        model.requires_grad_(False)
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.requires_grad_(True)
    if cfg.projector == "temperature":
        if not model.projector.token_mixture:
            raise ValueError("trainable.projector: temperature needs a token-mixture model (downsample='asr_tokens', asr_token_mixture > 0).")
        model.projector.log_temperature.requires_grad_(True)
    else:
        model.projector.requires_grad_(True)
    if cfg.encoder == "full":
        model.audio_encoder.requires_grad_(True)
    return [n for n, p in model.named_parameters() if p.requires_grad]


def cast_frozen(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Frozen parameters and buffers to ``dtype``; trainable parameters stay float32."""
    model.to(dtype)
    for param in model.parameters():
        if param.requires_grad:
            param.data = param.data.float()


class _AdaptersOff:
    """Run the teacher on the frozen base LLM: LoRA layers of the LLM disabled inside the block."""

    def __init__(self, module: torch.nn.Module):
        self.layers = _lora_layers(module) if any("lora_" in n for n, _ in module.named_parameters()) else []

    def __enter__(self):
        for layer in self.layers:
            layer.enable_adapters(False)

    def __exit__(self, *exc):
        for layer in self.layers:
            layer.enable_adapters(True)
            # enable_adapters(True) marks adapter weights trainable again; that is what we want here.


# ---------------------------------------------------------------------------------------------------------
# trainer
# ---------------------------------------------------------------------------------------------------------
def _ctc_term(base: AudioMiniChatForConditionalGeneration, audio_embeddings, aux: dict, cfg: LossConfig):
    """The ctc term over the LLM's input embeddings, or over ``aux["ctc_candidates"]`` (sorted ids) only."""
    table = base.get_input_embeddings().weight.detach()
    labels, blank = aux["ctc_labels"], int(aux["ctc_blank"])
    candidates = aux.get("ctc_candidates")
    if candidates is not None:
        valid = labels != -100
        position = torch.searchsorted(candidates, labels.clamp(min=0))
        found = candidates[position.clamp(max=len(candidates) - 1)] == labels
        if not found[valid].all():
            missing = sorted(set(labels[valid & ~found].tolist()))
            raise ValueError(f"Transcript token ids {missing[:10]} are not among the ctc candidate tokens.")
        labels = torch.where(valid, position, labels)
        blank = int(torch.searchsorted(candidates, torch.tensor(blank, device=candidates.device)))
        table = table[candidates]
    if cfg.ctc_embed <= 0:  # the alignment posteriors cost a second CTC pass: only when the term is weighted
        return {"ctc": ctc_alignment_loss(audio_embeddings, labels, table, blank, cfg.ctc_scale)}
    ctc, embed = ctc_alignment_loss(audio_embeddings, labels, table, blank, cfg.ctc_scale, with_embed=True)
    return {"ctc": ctc, "ctc_embed": embed}


def asr_embed_loss(audio_embeddings, token_ids, token_map: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Mean over clips of the mean over a clip's tokens of ``|h - e|^2 / 2``.

    ``h``: a clip's audio embedding at an ASR token, ``e``: the LLM input embedding (row of ``table``) of
    ``token_map[token]``. Tokens mapped to -1 (specials) are skipped; a clip without mapped tokens does not
    count in the mean (a batch with none gives a zero that keeps the graph).
    """
    per_clip = []
    for embeddings, ids in zip(audio_embeddings, token_ids):
        targets = token_map[ids.to(token_map.device)]
        keep = targets >= 0
        if bool(keep.any()):
            diff = embeddings[keep].float() - table[targets[keep]].float()
            per_clip.append(0.5 * diff.pow(2).sum(-1).mean())
    if not per_clip:
        return sum(e.sum() for e in audio_embeddings) * 0.0
    return torch.stack(per_clip).mean()


def _audio_terms(base: AudioMiniChatForConditionalGeneration, outputs, aux: dict, cfg: LossConfig) -> dict:
    """The terms on the audio embeddings themselves: the ctc terms and asr_embed, those weighted."""
    terms = _ctc_term(base, outputs.audio_embeddings, aux, cfg) if cfg.needs_ctc else {}
    if cfg.asr_embed > 0:
        if outputs.audio_token_ids is None:
            raise ValueError(
                "The asr_embed loss term needs a model with downsample='asr_tokens' (its audio embeddings sit at ASR tokens); "
                f"this model's downsample is {base.config.downsample!r}."
            )
        table = base.get_input_embeddings().weight.detach()
        terms["asr_embed"] = asr_embed_loss(outputs.audio_embeddings, outputs.audio_token_ids, base.asr_token_map, table)
    return terms


def distillation_step(model, base: AudioMiniChatForConditionalGeneration, inputs: dict, cfg: LossConfig):
    """One student pass (audio prompt) + one teacher pass (the same frozen LLM, text prompt, no gradients).

    ``inputs`` is a DistillationCollator batch (``teacher_*`` keys hold the text-prompt side); ``model`` is what
    runs the student (possibly DDP-wrapped), ``base`` the unwrapped model whose ``language_model`` is the teacher
    (LoRA adapters switched off). Returns ``(loss, terms, student_outputs)``. The one place the paper's objective
    is assembled: the Trainer and ``scripts/bench_train.py`` both call it.
    """
    inputs, teacher_inputs, aux = split_batch(inputs)
    labels = inputs.pop("labels")
    need_ctc = cfg.needs_ctc
    if need_ctc and not {"ctc_labels", "ctc_blank"} <= set(aux):
        raise ValueError(
            "The ctc loss term needs ctc_labels and ctc_blank in the batch: use DistillationCollator(..., ctc_blank_token=...)."
        )
    if not cfg.needs_llm:  # terms on the audio embeddings alone: the LLM is not run
        outputs = model(**inputs, audio_only=True)
        terms = _audio_terms(base, outputs, aux, cfg)
        return total_loss(terms, cfg), terms, outputs
    need_teacher = bool(teacher_inputs) and (cfg.logit > 0 or cfg.feature > 0)
    need_hidden = need_teacher and cfg.feature > 0
    outputs = model(**inputs, output_hidden_states=need_hidden, output_audio_embeddings=cfg.needs_audio_embeddings)
    teacher_logits = teacher_hidden = t_labels = None
    if need_teacher:
        llm = base.language_model
        with torch.no_grad(), _AdaptersOff(llm):
            t_labels = teacher_inputs.pop("labels")
            positions = (teacher_inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            teacher = llm(**teacher_inputs, position_ids=positions, output_hidden_states=need_hidden)
        teacher_logits, teacher_hidden = teacher.logits, teacher.hidden_states if need_hidden else None
    terms = distillation_losses(
        outputs.logits, labels, teacher_logits, t_labels,
        outputs.hidden_states if need_hidden else None, teacher_hidden, cfg,
    )
    if cfg.needs_audio_embeddings:
        terms.update(_audio_terms(base, outputs, aux, cfg))
    loss = total_loss({k: v for k, v in terms.items() if k != "feature" or cfg.feature > 0}, cfg)
    return loss, terms, outputs


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


class DistillationTrainer(Trainer):
    """Trainer whose loss is the weighted sum of next-token, logit and feature distillation terms."""

    def __init__(self, *args, loss_config: LossConfig, run_config: RunConfig | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_config = loss_config
        self.run_config = run_config
        # Our loss is already a per-sample mean: the Trainer must divide by gradient-accumulation steps.
        self.model_accepts_loss_kwargs = False
        self._term_sums: dict[str, float] = {}
        self._term_count = 0

    @property
    def _base(self) -> AudioMiniChatForConditionalGeneration:
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
        loss, terms, outputs = distillation_step(model, self._base, inputs, self.loss_config)
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
        super().log(logs, *args, **kwargs)

    # ---- checkpoints: trainable weights in safetensors, state in safetensors/JSON ---------------------
    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir or self.args.output_dir
        if not self.args.should_save:
            return
        save_trainable(self._base, output_dir, self.run_config)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        with open(os.path.join(output_dir, "training_args.json"), "w", encoding="utf-8") as fh:
            fh.write(self.args.to_json_string())

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        load_trainable(model or self._base, resume_from_checkpoint)

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        if not self.args.should_save:
            return
        tensors, meta = _flatten_state(self.optimizer.state_dict())
        _atomic_save_tensors(tensors, os.path.join(output_dir, "optimizer.safetensors"), {"meta": json.dumps(meta)})
        _atomic_write_json(os.path.join(output_dir, "scheduler.json"), self.lr_scheduler.state_dict())

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        if checkpoint is None:
            return
        path = os.path.join(checkpoint, "optimizer.safetensors")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Checkpoint {checkpoint} has no optimizer.safetensors; cannot resume exactly.")
        from safetensors import safe_open

        with safe_open(path, framework="pt") as fh:
            meta = json.loads(fh.metadata()["meta"])
        state = _unflatten_state(load_file(path), meta)
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
            "python": _jsonable(random.getstate()),
            "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        }
        _atomic_save_tensors(tensors, os.path.join(output_dir, f"rng_state_{rank}.safetensors"), {"meta": json.dumps(meta)})

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


def _jsonable(obj):
    if isinstance(obj, tuple):
        return [_jsonable(o) for o in obj]
    return obj


def _flatten_state(state: dict) -> tuple[dict, dict]:
    tensors, scalars = {}, {}
    for pid, pstate in state["state"].items():
        for key, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_state(tensors: dict, meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in list(tensors.items()) + list(meta["scalars"].items()):
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def _atomic_save_tensors(tensors: dict, path: str, metadata: dict | None = None) -> None:
    tmp = f"{path}.tmp"
    save_file(tensors, tmp, metadata=metadata)
    os.replace(tmp, path)


def _atomic_write_json(path: str, obj) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------------------
# trainable-only checkpoints
# ---------------------------------------------------------------------------------------------------------
def save_trainable(model: AudioMiniChatForConditionalGeneration, output_dir: str, run_config: RunConfig | None) -> None:
    """Write the trainable weights (safetensors), the model config and how to rebuild the full model."""
    os.makedirs(output_dir, exist_ok=True)
    weights = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    _atomic_save_tensors(weights, os.path.join(output_dir, TRAINABLE_WEIGHTS), {"format": "pt"})
    model.config.save_pretrained(output_dir)
    info = {"trainable": sorted(weights)}
    if run_config is not None:
        info.update(base_model=run_config.model, trainable_config=asdict(run_config.trainable),
                    init_weights=run_config.init_weights)
    _atomic_write_json(os.path.join(output_dir, RUN_CONFIG), info)


def load_trainable(model: AudioMiniChatForConditionalGeneration, checkpoint: str) -> None:
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


def load_trained_model(checkpoint: str, base_model: str | None = None, dtype=None):
    """A complete model from a trainable-only checkpoint: the base checkpoint's frozen parts + trained weights."""
    with open(os.path.join(checkpoint, RUN_CONFIG), encoding="utf-8") as fh:
        info = json.load(fh)
    base = base_model or info.get("base_model")
    if not base:
        raise ValueError(f"{checkpoint}: no base model recorded; pass base_model.")
    model = AudioMiniChatForConditionalGeneration.from_pretrained(base, dtype=dtype)
    if info.get("init_weights"):  # the run started from earlier trained weights: the frozen parts include them
        apply_trained_weights(model, info["init_weights"])
    configure_trainable(model, TrainableConfig(**info.get("trainable_config", {})))
    load_trainable(model, checkpoint)
    return model.eval()


# ---------------------------------------------------------------------------------------------------------
# validation: response perplexity under audio vs text prompts, sample generations
# ---------------------------------------------------------------------------------------------------------
@torch.no_grad()
def response_perplexity(model, batches) -> dict[str, float]:
    """Token-level response perplexity with the audio prompt and with the text prompt (same LLM)."""
    totals = {"audio": [0.0, 0], "text": [0.0, 0]}
    model.eval()
    llm = model.language_model
    for batch in batches:
        student, teacher, _ = split_batch(batch)
        labels = student.pop("labels")
        for kind, logits, lab in (
            ("audio", model(**student).logits, labels),
            ("text", llm(input_ids=teacher["input_ids"], attention_mask=teacher["attention_mask"]).logits, teacher["labels"]),
        ):
            mask = response_mask(lab)
            nll = F.cross_entropy(logits[mask].float(), lab[:, 1:][mask[:, :-1]], reduction="sum")
            totals[kind][0] += float(nll)
            totals[kind][1] += int(mask.sum())
    return {f"ppl_{k}": math.exp(v[0] / max(v[1], 1)) for k, v in totals.items()}


def nearest_tokens(embeddings: torch.Tensor, table: torch.Tensor, blank_id: int) -> list[int]:
    """Greedy CTC reading of one clip's audio embeddings: each frame's nearest input embedding (the ctc term's
    scoring), repeats collapsed, blanks dropped."""
    best = token_scores(embeddings, table).argmax(-1).tolist()
    out, prev = [], None
    for tok in best:
        if tok != prev and tok != blank_id:
            out.append(tok)
        prev = tok
    return out


def token_error_rate(refs: list[list[int]], hyps: list[list[int]]) -> float:
    """Levenshtein distance over tokens, summed, divided by the number of reference tokens."""
    errors = sum(edit_distance(ref, hyp) for ref, hyp in zip(refs, hyps))
    return errors / max(sum(len(ref) for ref in refs), 1)


@torch.no_grad()
def ctc_reading(model, batches) -> tuple[float, list[list[int]]]:
    """Token error rate of the audio embeddings read as tokens (``nearest_tokens``) against the transcripts."""
    table = model.get_input_embeddings().weight
    refs, hyps = [], []
    for batch in batches:
        student, _, aux = split_batch(batch)
        student.pop("labels", None)
        clips = model(**student, audio_only=True).audio_embeddings
        blank = int(aux["ctc_blank"])
        for clip, labels in zip(clips, aux["ctc_labels"]):
            refs.append(labels[labels != -100].tolist())
            hyps.append(nearest_tokens(clip, table, blank))
    return token_error_rate(refs, hyps), hyps


class ValidationCallback(TrainerCallback):
    """At each evaluation: audio vs text response perplexity (with the ctc term also the token error of the audio
    embeddings read as tokens) and a few logged sample generations."""

    def __init__(self, trainer: DistillationTrainer, eval_rows: list[dict], collator: DistillationCollator, n_samples: int):
        self.trainer, self.rows, self.collator, self.n = trainer, eval_rows, collator, n_samples

    def on_evaluate(self, args, state, control, **kwargs):
        model = self.trainer._base
        device = next(model.parameters()).device
        batches = []
        for i in range(0, len(self.rows), args.per_device_eval_batch_size):
            b = self.collator(self.rows[i : i + args.per_device_eval_batch_size])
            batches.append({k: v.to(device) for k, v in b.items()})
        metrics = response_perplexity(model, batches)
        proc, c = self.collator.processor, self.collator.cfg
        read_as = []
        if self.collator.ctc_blank is not None:  # with the ctc term: what the audio embeddings read as
            metrics["ctc_token_error"], read_as = ctc_reading(model, batches)
        samples = []
        for i, row in enumerate(self.rows[: self.n]):
            inputs = proc(text=proc.build_prompt(row[c.prompt_column]), audio=[decode_audio(row[c.audio_column], "eval")],
                          sampling_rate=proc.layout.sampling_rate).to(device)
            out = model.generate(**inputs, max_new_tokens=48, do_sample=False)
            text = proc.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0]
            samples.append({"transcript": row[c.transcript_column], "teacher": row[c.response_column], "audio_prompt": text})
            if read_as:
                samples[-1]["audio_read_as"] = proc.tokenizer.decode(read_as[i])
        model.train()
        if state.is_world_process_zero:
            self.trainer.log({f"eval_{k}": v for k, v in metrics.items()})
            with open(os.path.join(args.output_dir, "sample_generations.jsonl"), "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"step": state.global_step, **metrics, "samples": samples}) + "\n")


# ---------------------------------------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------------------------------------
def _load_rows(path: str, split: str, limit: int | None):
    from datasets import Audio, DatasetDict, load_from_disk

    ds = load_from_disk(path)
    if isinstance(ds, DatasetDict):
        if split not in ds:
            raise KeyError(f"{path} has splits {list(ds)}; expected {split!r}.")
        ds = ds[split]
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    for name, feature in ds.features.items():
        if isinstance(feature, Audio) and feature.decode:
            ds = ds.cast_column(name, Audio(sampling_rate=feature.sampling_rate, decode=False))
    return ds


def build_trainer(cfg: RunConfig) -> DistillationTrainer:
    if not cfg.model:
        raise ValueError("The config needs `model`: an AudioMiniChat checkpoint directory.")
    if not cfg.data.train:
        raise ValueError("The config needs `data.train`: a datasets directory (prepare-data output).")
    processor = AudioMiniChatProcessor.from_pretrained(cfg.model)
    model = AudioMiniChatForConditionalGeneration.from_pretrained(cfg.model)
    if cfg.init_weights:
        if not os.path.isfile(cfg.init_weights):
            raise FileNotFoundError(f"init_weights: {cfg.init_weights!r} does not exist (a scripts/export_projector.py file)")
        apply_trained_weights(model, cfg.init_weights)
    trainable = configure_trainable(model, cfg.trainable)
    if cfg.frozen_dtype:
        cast_frozen(model, getattr(torch, cfg.frozen_dtype))
    train = _load_rows(cfg.data.train, "train", cfg.data.max_train_samples)
    val = None
    if cfg.data.validation:
        val = _load_rows(cfg.data.validation, "validation", cfg.data.max_eval_samples)
    else:  # a DatasetDict with a validation split
        from datasets import DatasetDict, load_from_disk

        if isinstance(load_from_disk(cfg.data.train), DatasetDict):
            try:
                val = _load_rows(cfg.data.train, "validation", cfg.data.max_eval_samples)
            except KeyError:
                val = None
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
    # the training and validation transcripts (the Trainer's evaluation scores the ctc term too), read only if needed
    column = cfg.data.transcript_column
    collator = make_collator(processor, cfg.data, cfg.losses,
                             lambda: list(train[column]) + (list(val[column]) if val is not None else []))
    trainer = DistillationTrainer(
        model=model, args=args, train_dataset=train, eval_dataset=val, data_collator=collator,
        processing_class=processor, loss_config=cfg.losses, run_config=cfg,
    )
    if val is not None:
        # Trainer's own evaluation loop computes the distillation loss; the callback adds perplexities.
        trainer.add_callback(ValidationCallback(trainer, [val[i] for i in range(len(val))], collator, cfg.sample_generations))
    if trainer.is_world_process_zero():
        n_train = sum(p.numel() for n, p in model.named_parameters() if n in set(trainable))
        print(f"[train] trainable parameters: {n_train:,} in {len(trainable)} tensors; "
              f"frozen: {sum(p.numel() for p in model.parameters()) - n_train:,}; world size {args.world_size}", file=sys.stderr)
    return trainer


def latest_checkpoint(output_dir: str) -> str | None:
    if not os.path.isdir(output_dir):
        return None
    steps = [int(d.split("-")[1]) for d in os.listdir(output_dir) if d.startswith("checkpoint-") and d.split("-")[1].isdigit()]
    return os.path.join(output_dir, f"checkpoint-{max(steps)}") if steps else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML run config (see configs/)")
    parser.add_argument("--resume", nargs="?", const="latest", default=None,
                        help="resume from CHECKPOINT, or from the latest checkpoint in output_dir")
    parser.add_argument("--output-dir", default=None, help="override output_dir")
    parser.add_argument("--max-steps", type=int, default=None, help="override training.max_steps")
    args = parser.parse_args(argv)
    cfg = RunConfig.from_yaml(args.config)
    if args.output_dir:
        cfg.output_dir = args.output_dir
    if args.max_steps is not None:
        cfg.training["max_steps"] = args.max_steps
    existing = latest_checkpoint(cfg.output_dir)
    if existing and args.resume is None:
        # a fresh run would mix its checkpoints (and their rotation) with another run's
        raise SystemExit(f"{cfg.output_dir} already holds checkpoints ({os.path.basename(existing)}): pass --resume to "
                         "continue that run, or --output-dir for a new one.")
    trainer = build_trainer(cfg)
    resume = existing if args.resume == "latest" else args.resume
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(os.path.join(cfg.output_dir, "final"))
    if trainer.is_world_process_zero():
        _atomic_write_json(os.path.join(cfg.output_dir, "final", "log_history.json"), trainer.state.log_history)
    # every rank leaves together and closes the process group: a rank that exits while another still holds
    # gloo connections can make that one abort
    trainer.accelerator.wait_for_everyone()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
