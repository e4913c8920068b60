"""The interface every model implements, so training, evaluation and scoring treat them alike.

A model maps dense user and item ids to scores. Factorised models (`factorised = True`) score
by a dot product of a user vector and an item vector, which is what lets the scoring job rank
the whole catalogue with one matrix product per batch of users.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class Recommender(nn.Module):
    """Base class.

    Subclasses implement `score` for arbitrary pairs; factorised ones also `user_vectors` and
    `item_vectors` with `score(u, i) == user_vectors(u) · item_vectors(i)`.
    """

    factorised: bool = True

    def user_vectors(self, users: Tensor) -> Tensor:  # [B] -> [B, d]
        raise NotImplementedError(f"{type(self).__name__} is not factorised")

    def item_vectors(self, items: Tensor) -> Tensor:  # [N] -> [N, d]
        raise NotImplementedError(f"{type(self).__name__} is not factorised")

    def score(self, users: Tensor, items: Tensor) -> Tensor:
        """users [B], items [B, K] -> scores [B, K]."""
        u = self.user_vectors(users)
        i = self.item_vectors(items.reshape(-1)).view(*items.shape, -1)
        return torch.einsum("bd,bkd->bk", u, i)

    def forward(self, users: Tensor, items: Tensor) -> Tensor:  # what DDP wraps
        return self.score(users, items)

    @torch.no_grad()
    def score_all(self, users: Tensor, n_items: int, cells: int = 1 << 18) -> Tensor:
        """Scores of `users` [B] against the whole catalogue -> [B, n_items].

        A non-factorised model scores pairs in blocks of about `cells` (users x items), so
        its intermediate activations stay small whatever the batch of users.
        """
        items = torch.arange(n_items, device=users.device)
        if self.factorised:
            return self.user_vectors(users) @ self.item_vectors(items).T
        out = torch.empty(len(users), n_items, device=users.device)
        cols = min(n_items, cells)
        rows = max(1, cells // cols)
        for r in range(0, len(users), rows):
            for c in range(0, n_items, cols):
                u, i = users[r:r + rows], items[c:c + cols]
                out[r:r + rows, c:c + cols] = self.score(u, i.expand(len(u), -1))
        return out


def mlp(sizes: list[int], dropout: float) -> nn.Sequential:
    """Linear + ReLU + Dropout for each consecutive pair of `sizes`."""
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)
