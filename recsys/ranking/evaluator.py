"""Score a model (or a baseline) on held-out interactions over the full catalogue.

The user's training items are excluded from the ranking, as they are when recommendations are
published, and so are the items no training row shows (prepare drops validation rows of such an
item, and the score job publishes one only from its content, on request). Every metric of
`metrics.METRICS` is computed at each K, plus:

- coverage@K: the share of the catalogue that appears in at least one evaluated user's top K
  (slots a user could not fill, having seen nearly every item, are empty, not items);
- popularity_percentile@K: the mean popularity percentile of recommended items (0 = the least
  popular item, 100 = the most; the share of items strictly less popular), a popularity-bias
  measure: the popularity baseline scores close to 100.

The lists themselves are not kept (unless `collect`): per K, the evaluation leaves the slots
each item got (`exposure`) and, with item categories, the intra-list diversity, the inputs of
the beyond-accuracy numbers of `exposure.summary`.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor

from recsys.ranking.exposure import category_sets, exposure_counts, intra_list_diversity
from recsys.ranking.metrics import METRICS
from recsys.ranking.topk import exclude_, ragged_mask, take_ragged, top_k

ScoreFn = Callable[[Tensor], Tensor]  # users [B] -> scores [B, n_items]


class Csr:
    """Each user's items as a ragged array over all user ids 0..n_users-1."""

    def __init__(self, users: np.ndarray, items: np.ndarray, n_users: int):
        order = np.lexsort((items, users))
        self.items = items[order]
        self.offsets = np.concatenate([[0], np.cumsum(np.bincount(users, minlength=n_users))])

    def mask(self, users: np.ndarray, n_items: int) -> Tensor:
        """[len(users), n_items] bool: True where the user has the item."""
        return ragged_mask(*self.rows(users), n_items)

    def rows(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The items of `users` as a ragged array (offsets, flat)."""
        return take_ragged(self.offsets, self.items, users)

    def counts(self, users: np.ndarray) -> np.ndarray:
        return self.offsets[users + 1] - self.offsets[users]


def popularity_scores(train_items: np.ndarray, n_items: int) -> Tensor:
    """Every user gets the items ranked by their number of training interactions."""
    return torch.as_tensor(np.bincount(train_items, minlength=n_items), dtype=torch.float32)


def popularity(train_items: np.ndarray, n_items: int) -> ScoreFn:
    """The reference every model is measured against (in training, evaluation and the gate)."""
    pop = popularity_scores(train_items, n_items)
    return lambda users: pop.expand(len(users), -1)


def popularity_percentile(popularity: np.ndarray) -> np.ndarray:
    """For each item, the percentage of catalogue items strictly less popular (ties are fair)."""
    return 100.0 * np.searchsorted(np.sort(popularity), popularity, side="left") / len(popularity)


def standard_error(values: np.ndarray) -> float:
    """The standard error of the mean of `values` (per-user metrics, or paired differences)."""
    n = len(values)
    return float(values.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0


class Evaluator:
    """Holds the validation pairs and each evaluated user's seen (training) items.

    Args: valid_* and train_* are parallel arrays of dense ids; n_items the catalogue size;
    ks the cut-offs; max_users caps the users scored (a sample fixed by `seed`); popularity
    (training interactions per item) enables the popularity-bias metric; categories ([n_items]
    or [n_items, M] codes, 0: none) the intra-list diversity.
    """

    def __init__(self, valid_users: np.ndarray, valid_items: np.ndarray, train_users: np.ndarray,
                 train_items: np.ndarray, n_items: int, ks: tuple[int, ...] = (10,),
                 max_users: int | None = None, seed: int = 0, popularity: np.ndarray | None = None,
                 categories: np.ndarray | None = None, batch_cells: int = 20_000_000):
        users = np.unique(valid_users)
        if max_users is not None and len(users) > max_users:
            users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
        n_users = int(max(valid_users.max(initial=0), train_users.max(initial=0))) + 1
        self.users = users
        self.n_items = n_items
        self.ks = tuple(sorted(ks))
        self.valid = Csr(valid_users, valid_items, n_users)
        self.seen = Csr(train_users, train_items, n_users)
        unranked = np.flatnonzero(np.bincount(train_items, minlength=n_items) == 0)
        self.unranked = torch.as_tensor(unranked) if len(unranked) else None
        self.percentile = None if popularity is None else torch.as_tensor(
            popularity_percentile(popularity.astype(np.float64)))
        self.categories = None if categories is None else category_sets(categories)
        self.batch = max(1, batch_cells // max(1, n_items))
        self.standard_errors: dict[str, float] = {}  # of the last evaluation's per-user metrics
        self.per_user: dict[str, np.ndarray] = {}  # the last evaluation's metrics per user, in users' order
        self.top_items: np.ndarray | None = None  # the last evaluation's top-K lists (collect=True)
        self.top_scores: np.ndarray | None = None
        self.exposure: dict[int, np.ndarray] = {}  # the last evaluation's slots per item, per K
        self.diversity: dict[int, float] = {}  # ... its mean intra-list diversity (categories)

    @torch.no_grad()
    def evaluate(self, score_fn: ScoreFn, device: str | torch.device = "cpu",
                 collect: bool = False, on_batch: Callable[[int, int], None] | None = None) -> dict[str, float]:
        """Mean of each metric over the evaluated users: {'ndcg@10': ..., 'coverage@10': ...}.
        `on_batch(batches done, users done)` is called after each batch of users (progress)."""
        kmax = min(self.ks[-1], self.n_items)
        per_user: dict[str, list[np.ndarray]] = {f"{m}@{k}": [] for m in METRICS for k in self.ks}
        exposure = {k: np.zeros(self.n_items, np.int64) for k in self.ks}
        diversity = {k: [0.0, 0] for k in self.ks}  # sum over lists, lists
        pct = {k: 0.0 for k in self.ks}
        tops, top_scores = [], []
        blocked = None if self.unranked is None else self.unranked.to(device)
        for lo in range(0, len(self.users), self.batch):
            users = self.users[lo:lo + self.batch]
            # A copy where the score function returned a view (popularity's expanded row):
            # the seen items are excluded in place.
            scores = score_fn(torch.as_tensor(users, device=device).long()).to(device)
            if scores._base is not None:
                scores = scores.clone()
            top_values, top = top_k(exclude_(scores, *self.seen.rows(users), blocked), kmax)
            relevant = self.valid.mask(users, self.n_items).to(device)
            hits = relevant.gather(1, top)
            n_rel = relevant.sum(1)
            top_cpu = top.cpu()
            lists = torch.where(torch.isfinite(top_values).cpu(), top_cpu, -1).numpy()  # -1: empty slot
            for k in self.ks:
                for name, fn in METRICS.items():
                    per_user[f"{name}@{k}"].append(fn(hits[:, :k], n_rel).double().cpu().numpy())
                exposure[k] += exposure_counts(lists[:, :k], self.n_items)
                if self.categories is not None:
                    d = intra_list_diversity(lists[:, :k], self.categories)
                    diversity[k][0] += float(np.nansum(d))
                    diversity[k][1] += int(np.isfinite(d).sum())
                if self.percentile is not None:
                    pct[k] += float(self.percentile[top_cpu[:, :k]].mean(1).sum())
            if collect:
                tops.append(top_cpu.numpy())
                top_scores.append(scores.gather(1, top).cpu().numpy())
            if on_batch is not None:
                on_batch(lo // self.batch + 1, lo + len(users))
        n = max(1, len(self.users))
        self.per_user = {key: np.concatenate(v) if v else np.zeros(0) for key, v in per_user.items()}
        out = {key: float(v.sum()) / n for key, v in self.per_user.items()}
        self.standard_errors = {key: standard_error(v) for key, v in self.per_user.items()}
        for k in self.ks:
            out[f"coverage@{k}"] = float(np.mean(exposure[k] > 0))
            if self.percentile is not None:
                out[f"popularity_percentile@{k}"] = pct[k] / n
        out["users"] = len(self.users)
        self.exposure = exposure
        self.diversity = ({k: total / count if count else float("nan")
                           for k, (total, count) in diversity.items()} if self.categories is not None else {})
        if collect and tops:
            self.top_items, self.top_scores = np.concatenate(tops), np.concatenate(top_scores)
        return out
