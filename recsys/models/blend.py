"""A blend: the weighted sum of its members' per-user standardised scores.

No model family wins on every log; a blend of two or three (e.g. a sequence model and EASE)
often beats each of them. Each member's scores for a user are centred and scaled over the
catalogue (z = (s - mean) / std), so members on different scales weigh what their weights say.
The blend is itself a model: evaluated, gated, published and scored like any other, in the same
batch, with one top-k over the summed scores.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from recsys.models.base import Recommender


def standardise(scores: Tensor) -> Tensor:
    """Per row: (s - mean) / std over the columns (a constant row becomes zeros)."""
    mean = scores.mean(1, keepdim=True)
    std = scores.std(1, keepdim=True).clamp(min=1e-6)
    return (scores - mean) / std


class Blend(Recommender):
    """members (built models of one snapshot), weights -> score = Σ w_m · standardise(s_m).

    >>> from recsys.models.mf import MatrixFactorization
    >>> b = Blend([MatrixFactorization(3, 5, 4), MatrixFactorization(3, 5, 4)], [0.75, 0.25])
    >>> b.score_users(torch.tensor([0, 2])).shape
    torch.Size([2, 5])
    """

    factorised = False

    def __init__(self, members: list[Recommender], weights: list[float]):
        super().__init__()
        if len(members) != len(weights) or not members:
            raise ValueError(f"a blend needs one weight per member, got {len(members)} and {len(weights)}")
        self.members = nn.ModuleList(members)
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32))
        self.n_items = members[0].n_items
        # A blend scores users from their history alone only if every member does.
        self.uses_history = all(m.uses_history for m in members)

    @property
    def reads_history(self) -> bool:
        return any(m.uses_history for m in self.members)

    def score_users(self, users: Tensor, seq: Tensor | None = None) -> Tensor:
        total = None
        for w, member in zip(self.weights, self.members):
            z = standardise(member.score_users(users, seq)) * w
            total = z if total is None else total.add_(z)
        return total

    def score_histories(self, seq: Tensor) -> Tensor:
        return self.score_users(torch.zeros(len(seq), dtype=torch.long, device=seq.device), seq)
