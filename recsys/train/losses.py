"""Training losses over a positive score [B] and sampled negative scores [B, K].

Kept apart from the models (as in torchrec's DLRMTrain), so what is saved and served carries
no training code. `weight` [B] scales each positive's loss (implicit-feedback confidence).
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


def bpr(pos: Tensor, neg: Tensor, weight: Tensor) -> Tensor:
    """Bayesian personalised ranking: -log σ(s⁺ - s⁻), averaged over the negatives."""
    return (-F.logsigmoid(pos.unsqueeze(1) - neg).mean(1) * weight).sum() / weight.sum().clamp(min=1e-6)


def bce(pos: Tensor, neg: Tensor, weight: Tensor) -> Tensor:
    """Pointwise log loss: positives towards 1, negatives towards 0 (NCF's objective)."""
    loss = F.softplus(-pos) + F.softplus(neg).mean(1)
    return (loss * weight).sum() / weight.sum().clamp(min=1e-6)


def softmax(pos: Tensor, neg: Tensor, weight: Tensor) -> Tensor:
    """Sampled softmax: the positive against its K negatives, cross-entropy on index 0."""
    logits = torch.cat([pos.unsqueeze(1), neg], dim=1)
    loss = torch.logsumexp(logits, dim=1) - pos
    return (loss * weight).sum() / weight.sum().clamp(min=1e-6)


LOSSES = {"bpr": bpr, "bce": bce, "softmax": softmax}
