"""The interface every model implements, so training, evaluation and scoring treat them alike.

Two kinds of model:
- table models (`uses_history = False`: mf, neumf, two_tower) learn a row per user id and score
  (user id, item id) pairs;
- history models (`uses_history = True`: sasrec, gru4rec, multvae, ease) compute a user from
  the user's recent items: `seq` [B, L] item ids in time order, right-aligned, padded on the
  left with `PAD` (-1). No per-user table: a new user with history is scored like any other.

Factorised models (`factorised = True`) score by a dot product of a user vector (from the id
or from the history) and an item vector, which is what lets the scoring job rank the whole
catalogue with one matrix product per batch of users.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


PAD = -1  # the padding item id of a history


class Recommender(nn.Module):
    """Base class.

    Table models implement `score` for arbitrary pairs; factorised ones also `user_vectors`
    and `item_vectors` with `score(u, i) == user_vectors(u) · item_vectors(i)`. History
    models implement `score_histories` (and, when factorised, `history_vectors`).
    """

    factorised: bool = True
    uses_history: bool = False  # the user is their history (no per-user table)
    n_items: int

    @property
    def reads_history(self) -> bool:
        """Whether `score_users` needs the users' histories (a blend may need both)."""
        return self.uses_history

    def score_users(self, users: Tensor, seq: Tensor | None = None) -> Tensor:
        """Scores of every item for users [B] (their ids) with histories `seq` [B, L] (history
        models) -> [B, n_items]: the one call the evaluator makes for any model."""
        if self.uses_history:
            if seq is None:
                raise ValueError(f"{type(self).__name__} scores users from their histories; none given")
            return self.score_histories(seq)
        return self.score_all(users, self.n_items)

    max_len: int  # history models: the newest items they read

    def recent(self, seq: Tensor) -> Tensor:
        """The newest `max_len` columns of `seq` (a blend hands its members its longest one)."""
        return seq[:, -self.max_len:] if seq.shape[1] > self.max_len else seq

    def history_vectors(self, seq: Tensor) -> Tensor:  # [B, L] -> [B, d]
        raise NotImplementedError(f"{type(self).__name__} does not read histories")

    def score_histories(self, seq: Tensor) -> Tensor:
        """Scores of the users whose recent items are `seq` [B, L] -> [B, n_items]."""
        n_items = self.n_items
        return self.history_vectors(seq) @ self.item_vectors(torch.arange(n_items, device=seq.device)).T

    def user_vectors(self, users: Tensor) -> Tensor:  # [B] -> [B, d]
        raise NotImplementedError(f"{type(self).__name__} is not factorised")

    def item_vectors(self, items: Tensor) -> Tensor:  # [N] -> [N, d]
        raise NotImplementedError(f"{type(self).__name__} is not factorised")

    def pair_vectors(self, users: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
        """(user_vectors(users), item_vectors(items)) in one call, what a training step asks for:
        a model whose vectors share work (LightGCN's sampled neighbourhoods) computes them together."""
        return self.user_vectors(users), self.item_vectors(items)

    def penalised(self, users: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
        """The rows `train.l2` penalises for a batch's users [B] and items [B]: by default the
        vectors that score them; a model whose scoring vectors are computed from free rows
        (LightGCN) penalises those rows instead."""
        return self.user_vectors(users), self.item_vectors(items)

    def query_vectors(self, users: Tensor, seq: Tensor | None) -> Tensor:
        """The user side of a factorised model: from `seq` for a history model, else by id."""
        return self.history_vectors(seq) if self.uses_history else self.user_vectors(users)

    def score(self, users: Tensor, items: Tensor) -> Tensor:
        """users [B], items [B, K] -> scores [B, K]."""
        u, i = self.pair_vectors(users, items.reshape(-1))
        return torch.einsum("bd,bkd->bk", u, i.view(*items.shape, -1))

    def forward(self, users: Tensor, items: Tensor) -> Tensor:  # what training calls
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


class Dropout(nn.Dropout):
    """`nn.Dropout` with a cheaper mask on the CPU: 16 random bits per element, drawn 64 at a
    time, where torch's CPU dropout draws a float per element: half its forward + backward time
    (neumf's activations, 9 pairs per row: 2.0 ms against 4.3 a step). p is rounded to a
    multiple of 1 / 65536."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu":
            return super().forward(x)
        if self.p >= 1:
            return x * 0
        bits = torch.empty((x.numel() + 3) // 4, dtype=torch.int64).random_(-2**63, None)
        drop = round(self.p * 65536)  # of the 65,536 values of an int16, the lowest `drop` drop
        keep = bits.view(torch.int16)[: x.numel()].view(x.shape) >= drop - 32768
        return x * keep.to(x.dtype).mul_(65536 / (65536 - drop))


def mlp(sizes: list[int], dropout: float) -> nn.Sequential:
    """Linear + ReLU + Dropout for each consecutive pair of `sizes`."""
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU(), Dropout(dropout)]
    return nn.Sequential(*layers)
