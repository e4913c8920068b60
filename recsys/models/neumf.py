"""Neural collaborative filtering (He et al., 2017): a GMF tower and an MLP tower, fused."""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from recsys.models.base import Recommender, mlp


class NeuMF(Recommender):
    """score(u, i) = w · [p_u ⊙ q_i ; MLP([p'_u ; q'_i])].

    Not factorised: the MLP sees the pair. Its GMF half is, which the scoring job uses to
    pick candidates before re-ranking them with the full score (`candidate_*_vectors`).

    Args: n_users, n_items, dim (GMF size), hidden (MLP sizes; the MLP embeddings are
    hidden[0] // 2 each), dropout.
    """

    factorised = False

    def __init__(self, n_users: int, n_items: int, dim: int, hidden: list[int], dropout: float):
        super().__init__()
        self.n_items = n_items
        half = max(1, hidden[0] // 2)
        self.gmf_user, self.gmf_item = nn.Embedding(n_users, dim), nn.Embedding(n_items, dim)
        self.mlp_user, self.mlp_item = nn.Embedding(n_users, half), nn.Embedding(n_items, half)
        self.mlp = mlp([2 * half, *hidden[1:]] if len(hidden) > 1 else [2 * half, half], dropout)
        out = hidden[-1] if len(hidden) > 1 else half
        self.predict = nn.Linear(dim + out, 1)
        for emb in (self.gmf_user, self.gmf_item, self.mlp_user, self.mlp_item):
            nn.init.normal_(emb.weight, std=0.05)

    def score(self, users: Tensor, items: Tensor) -> Tensor:
        """users [B], items [B, K] -> [B, K]. Each user row and each distinct item row is looked
        up once (a step's K per row come from a small shared pool), so a sparse table's gradient
        holds each row once; and the MLP's first layer, W [p'_u ; q'_i] = W_u p'_u + W_i q'_i, is
        applied per user and per distinct item, not per pair."""
        b, k = items.shape
        distinct, inverse = torch.unique(items, return_inverse=True)
        gmf = self.gmf_user(users).unsqueeze(1) * self.gmf_item(distinct)[inverse]
        first, h = self.mlp[0], self.mlp_user.embedding_dim
        user_part = F.linear(self.mlp_user(users), first.weight[:, :h], first.bias)
        item_part = F.linear(self.mlp_item(distinct), first.weight[:, h:])
        deep = self.mlp[1:](user_part.unsqueeze(1) + item_part[inverse])
        return self.predict(torch.cat([gmf, deep], dim=2)).squeeze(2)

    def candidate_user_vectors(self, users: Tensor) -> Tensor:
        """The GMF part of the score, as a dot product: (p_u ⊙ w_gmf) · q_i."""
        return self.gmf_user(users) * self.predict.weight[0, : self.gmf_user.embedding_dim]

    def candidate_item_vectors(self, items: Tensor) -> Tensor:
        return self.gmf_item(items)
