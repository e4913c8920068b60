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


def standardise_(scores: Tensor) -> Tensor:
    """Per row, in place: (s - mean) / std over the columns (a constant row becomes zeros)."""
    mean = scores.mean(1, keepdim=True)
    std = scores.std(1, keepdim=True).clamp(min=1e-6)
    return scores.sub_(mean).div_(std)


class Blend(Recommender):
    """members (built models of one snapshot), weights -> score = Σ w_m · standardise_(s_m).

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
        out = torch.empty(len(users), self.n_items, device=self.weights.device)
        return self.score_into(out, None, users, seq, [None] * len(self.members))

    def score_into(self, out: Tensor, scratch: Tensor | None, users: Tensor, seq: Tensor | None,
                   item_vectors: list[Tensor | None]) -> Tensor:
        """`score_users` written into `out` [B, n_items], each member scored into `scratch`
        with its item vectors computed once (`item_vectors[m]`; None for a member that is not
        factorised): the score job's path, no fresh [B, n_items] blocks per member and batch."""
        for i, (w, member, items) in enumerate(zip(self.weights.tolist(), self.members, item_vectors)):
            if items is None:
                s = member.score_users(users, seq)
            else:
                s = torch.mm(member.query_vectors(users, seq), items.T, out=scratch)
            standardise_(s)
            if i == 0:
                torch.mul(s, w, out=out)
            else:
                out.add_(s, alpha=w)
        return out

    def fold(self, item_vectors: list[Tensor]) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        """For a blend of factorised members: (their item vectors side by side [N, Σd], each
        member's item-vector mean [d] and covariance [d, d] in float64), computed once.

        With s = u·Vᵀ, a user's mean over the catalogue is u·mean(V) and their variance uᵀ Cov(V) u,
        so the standardised blend is ONE matrix product of the scaled user vectors
        [w₁u₁/σ₁, w₂u₂/σ₂, ...] with the stacked item vectors, minus Σ w·μ/σ per user.
        """
        moments = []
        for v in item_vectors:
            v64 = v.double()
            mean = v64.mean(0)
            centred = v64 - mean
            moments.append((mean, centred.T @ centred / max(1, len(v) - 1)))
        return torch.cat(item_vectors, dim=1), moments

    def score_folded(self, out: Tensor, users: Tensor, seq: Tensor | None,
                     folded: tuple[Tensor, list[tuple[Tensor, Tensor]]]) -> Tensor:
        """`score_users` of a blend of factorised members into `out`, by `fold`'s identity."""
        stacked, moments = folded
        scaled, offset = [], torch.zeros(len(users), dtype=torch.float64)
        for w, member, (mean, cov) in zip(self.weights.tolist(), self.members, moments):
            u = member.query_vectors(users, seq)
            u64 = u.double()
            std = ((u64 @ cov) * u64).sum(1).clamp(min=0).sqrt().clamp(min=1e-6)
            scaled.append((u64 * (w / std).unsqueeze(1)).to(u.dtype))
            offset += w * (u64 @ mean) / std
        scores = torch.mm(torch.cat(scaled, dim=1), stacked.T, out=out)
        return scores.sub_(offset.to(scores.dtype).unsqueeze(1))

    def score_histories(self, seq: Tensor) -> Tensor:
        return self.score_users(torch.zeros(len(seq), dtype=torch.long, device=seq.device), seq)
