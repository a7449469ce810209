"""LoRA on the LLM that is active only for prompts that hold audio (``config.audio_lora``).

The adapter adds capacity where the LLM reads the audio embeddings, while a text prompt runs the untouched LLM:
for a batch row without audio placeholders nothing is added, so text answers and logits are exactly those of the
LLM alone (tested). The low-rank pairs live in their own module (``AudioMiniChatForConditionalGeneration.audio_lora``)
and reach the LLM's linear layers through forward hooks, so the LLM's own weights and their names stay as they
are; which rows are "audio" is set per forward (or per ``generate`` call) by :class:`AudioGate`.
"""

from __future__ import annotations

import re
from contextlib import contextmanager

import torch
from torch import nn


class AudioGate:
    """Which batch rows the adapter applies to: a bool tensor (batch,) or None (off)."""

    def __init__(self):
        self.rows: torch.Tensor | None = None

    @contextmanager
    def open(self, rows: torch.Tensor | None):
        """Set the rows for the block, unless an outer block (a ``generate`` call) has set them already."""
        if self.rows is not None or rows is None:
            yield
            return
        self.rows = rows if bool(rows.any()) else None
        try:
            yield
        finally:
            self.rows = None


class LoRAPair(nn.Module):
    """``up @ down * alpha / r``, ``up`` zero-initialised (a fresh adapter changes nothing). Not named lora_A / lora_B:
    those are peft's, which a trained-weights file merges into the base weight; this pair is never merged."""

    def __init__(self, in_features: int, out_features: int, r: int, alpha: float):
        super().__init__()
        self.down = nn.Linear(in_features, r, bias=False)
        self.up = nn.Linear(r, out_features, bias=False)
        self.scaling = float(alpha) / float(r)
        nn.init.kaiming_uniform_(self.down.weight, a=5 ** 0.5)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x.to(self.down.weight.dtype))) * self.scaling


def check_spec(spec: dict) -> dict:
    """``{"r", "alpha", "targets"}`` with defaults, or a ValueError naming the bad field."""
    unknown = set(spec) - {"r", "alpha", "targets"}
    if unknown:
        raise ValueError(f"audio_lora: unknown field(s) {sorted(unknown)}; expected r, alpha, targets.")
    out = {"r": int(spec.get("r", 8)), "alpha": float(spec.get("alpha", 16)), "targets": list(spec.get("targets", ["q_proj", "v_proj"]))}
    if out["r"] < 1 or not out["targets"]:
        raise ValueError(f"audio_lora: r must be >= 1 and targets non-empty, got {spec}.")
    return out


class AudioLoRA(nn.Module):
    """The adapter's pairs (by the LLM module's dotted name, dots as ``__``) and the hooks that apply them."""

    def __init__(self, language_model: nn.Module, spec: dict, gate: AudioGate):
        super().__init__()
        spec = check_spec(spec)
        pattern = re.compile(rf"\.({'|'.join(map(re.escape, spec['targets']))})$")
        self.pairs = nn.ModuleDict()
        self._targets = []
        for name, module in language_model.named_modules():
            if isinstance(module, nn.Linear) and pattern.search("." + name):
                key = name.replace(".", "__")
                self.pairs[key] = LoRAPair(module.in_features, module.out_features, spec["r"], spec["alpha"])
                self._targets.append((module, key))
        if not self._targets:
            raise ValueError(f"audio_lora: no linear layer of the LLM is named {spec['targets']}.")
        self.gate = gate
        self._handles = [module.register_forward_hook(self._hook(key)) for module, key in self._targets]

    def _hook(self, key: str):
        def apply(module, args, output):
            rows = self.gate.rows
            if rows is None:
                return output
            x = args[0]
            if rows.shape[0] != x.shape[0]:  # generate() expands the batch (beams, return sequences)
                rows = rows.repeat_interleave(x.shape[0] // rows.shape[0])
            delta = self.pairs[key](x)
            if not bool(rows.all()):
                delta = delta * rows.view(-1, *([1] * (x.dim() - 1))).to(delta.dtype)
            return output + delta.to(output.dtype)

        return apply


__all__ = ["AudioGate", "AudioLoRA", "LoRAPair", "check_spec"]
