"""Two-tower model: a user tower and an item tower over ids and side features."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from recsys.models.base import Recommender, mlp
from recsys.models.content import SideFeatures, kept_ids
from recsys.models.features import FeatureTable

class Tower(nn.Module):
    """id embedding + the side features (categorical, numeric, multi-hot, a text CNN over words,
    bags of genres or tags: content.py `SideFeatures`) -> MLP -> unit vector.

    The id embedding and the activity features an id without history lacks (recency, age; its
    count stays: `SideFeatures`) are zeroed for ids without history (never trained) and, during
    training, for a random `id_dropout` share of rows, so the content features alone learn to
    place a new user or item as they will be asked to: with list features the item tower is the
    content item encoder.
    """

    def __init__(self, features: FeatureTable, dim: int, hidden: list[int], dropout: float,
                 id_dropout: float):
        super().__init__()
        self.id = nn.Embedding(features.n, dim)
        nn.init.normal_(self.id.weight, std=0.05)
        self.side = SideFeatures(features)
        in_dim = dim + self.side.width
        self.mlp = mlp([in_dim, *hidden], dropout)
        self.out = nn.Linear(hidden[-1] if hidden else in_dim, dim)
        self.id_dropout = id_dropout
        self.register_buffer("f_history", features.history)

    def forward(self, ids: Tensor) -> Tensor:
        keep = kept_ids(self.f_history[ids], self.id_dropout, self.training)
        x = torch.cat([self.id(ids) * keep, self.side(ids, keep)], dim=1)
        return F.normalize(self.out(self.mlp(x)), dim=-1)


class TwoTower(Recommender):
    """score(u, i) = cos(user_tower(u), item_tower(i)) / temperature.

    Args: user and item FeatureTable (from prepare), dim, hidden (MLP sizes), dropout,
    id_dropout, temperature (the vectors carry 1/sqrt(T) each, so the score is a plain dot).
    """

    def __init__(self, users: FeatureTable, items: FeatureTable, dim: int, hidden: list[int],
                 dropout: float, id_dropout: float, temperature: float):
        super().__init__()
        self.n_items = items.n
        self.user_tower = Tower(users, dim, hidden, dropout, id_dropout)
        self.item_tower = Tower(items, dim, hidden, dropout, id_dropout)
        self.scale = 1.0 / math.sqrt(temperature)

    def user_vectors(self, users: Tensor) -> Tensor:
        return self.user_tower(users) * self.scale

    def item_vectors(self, items: Tensor) -> Tensor:
        return self.item_tower(items) * self.scale
