"""Response-token metrics shared by the training losses, validation and the benchmark."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def response_mask(labels: torch.Tensor) -> torch.Tensor:
    """Positions whose logits predict a response token: position p predicts label p + 1."""
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != -100
    return mask


def response_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
    """Summed negative log-likelihood of the response tokens (labels != -100) and their count."""
    mask = response_mask(labels)
    nll = F.cross_entropy(logits[mask].float(), labels[:, 1:][mask[:, :-1]], reduction="sum")
    return float(nll), int(mask.sum())


__all__ = ["response_mask", "response_nll"]
