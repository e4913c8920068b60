"""Matrix factorisation: a user vector and an item vector per id, plus an item bias."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from recsys.models.base import Recommender


class MatrixFactorization(Recommender):
    """score(u, i) = p_u · q_i + b_i.

    Args: n_users, n_items (embedding rows), dim (d). The bias rides along as an extra
    coordinate (user side 1, item side b_i), so the score stays one dot product of size d + 1.

    >>> m = MatrixFactorization(3, 4, dim=8)
    >>> m.score(torch.tensor([0, 2]), torch.tensor([[1, 3], [0, 0]])).shape
    torch.Size([2, 2])
    """

    def __init__(self, n_users: int, n_items: int, dim: int):
        super().__init__()
        self.n_items = n_items
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        self.item_bias = nn.Embedding(n_items, 1)
        nn.init.normal_(self.user.weight, std=0.05)
        nn.init.normal_(self.item.weight, std=0.05)
        nn.init.zeros_(self.item_bias.weight)

    def user_vectors(self, users: Tensor) -> Tensor:
        p = self.user(users)
        return torch.cat([p, torch.ones_like(p[:, :1])], dim=1)

    def item_vectors(self, items: Tensor) -> Tensor:
        return torch.cat([self.item(items), self.item_bias(items)], dim=1)
