"""Score a model (or a baseline) on held-out interactions over the full catalogue.

The user's training items are excluded from the ranking, as they are when recommendations are
published, and every metric of `metrics.METRICS` is computed at each K.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor

from recsys.evaluation.metrics import METRICS, top_k_excluding

ScoreFn = Callable[[Tensor], Tensor]  # users [B] -> scores [B, n_items]


def _csr(users: np.ndarray, items: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of `keep` (sorted user ids) -> (offsets, items) of their pairs."""
    sel = np.isin(users, keep)
    u, i = users[sel], items[sel]
    order = np.lexsort((i, u))
    u, i = u[order], i[order]
    offsets = np.searchsorted(u, np.append(keep, keep[-1] + 1 if len(keep) else 0))
    return offsets, i


class Evaluator:
    """Holds the validation pairs and each evaluated user's seen (training) items.

    Args: valid_* and train_* are parallel arrays of dense ids; n_items the catalogue size;
    ks the cut-offs; max_users caps the users scored (a sample fixed by `seed`).
    """

    def __init__(self, valid_users: np.ndarray, valid_items: np.ndarray, train_users: np.ndarray,
                 train_items: np.ndarray, n_items: int, ks: tuple[int, ...] = (10,),
                 max_users: int | None = None, seed: int = 0, batch_cells: int = 20_000_000):
        users = np.unique(valid_users)
        if max_users is not None and len(users) > max_users:
            users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
        self.users = users
        self.n_items = n_items
        self.ks = tuple(sorted(ks))
        self.valid = _csr(valid_users, valid_items, users)
        self.seen = _csr(train_users, train_items, users)
        self.batch = max(1, batch_cells // max(1, n_items))

    def _mask(self, csr: tuple[np.ndarray, np.ndarray], lo: int, hi: int, device) -> Tensor:
        offsets, items = csr
        counts = np.diff(offsets[lo:hi + 1])
        rows = np.repeat(np.arange(hi - lo), counts)
        cols = items[offsets[lo]:offsets[hi]]
        mask = torch.zeros(hi - lo, self.n_items, dtype=torch.bool, device=device)
        mask[torch.as_tensor(rows, device=device), torch.as_tensor(cols, device=device).long()] = True
        return mask

    @torch.no_grad()
    def evaluate(self, score_fn: ScoreFn, device: str | torch.device = "cpu") -> dict[str, float]:
        """Mean of each metric over the evaluated users: {'ndcg@10': ..., 'recall@10': ...}."""
        kmax = self.ks[-1]
        sums = {f"{m}@{k}": 0.0 for m in METRICS for k in self.ks}
        for lo in range(0, len(self.users), self.batch):
            hi = min(lo + self.batch, len(self.users))
            users = torch.as_tensor(self.users[lo:hi], device=device).long()
            scores = score_fn(users).to(device)
            top = top_k_excluding(scores, self._mask(self.seen, lo, hi, device), kmax)
            relevant = self._mask(self.valid, lo, hi, device)
            hits = relevant.gather(1, top)
            n_rel = relevant.sum(1)
            for k in self.ks:
                for name, fn in METRICS.items():
                    sums[f"{name}@{k}"] += float(fn(hits[:, :k], n_rel).sum())
        n = max(1, len(self.users))
        out = {key: value / n for key, value in sums.items()}
        out["users"] = len(self.users)
        return out


def popularity_scores(train_items: np.ndarray, n_items: int) -> Tensor:
    """The popularity baseline: every user gets the items ranked by training interactions."""
    return torch.as_tensor(np.bincount(train_items, minlength=n_items), dtype=torch.float32)
