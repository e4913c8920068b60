"""Validation during training: the model and the popularity reference on the validation rows.

The same evaluator as the evaluate step (full catalogue, each user's training items excluded),
so early stopping, the gate's fallback numbers and the report all measure one thing. History
models are scored from each validation user's training history (validation rows left out).
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from recsys import schema as S
from recsys.config import TrainConfig
from recsys.models import Recommender, ranker
from recsys.ranking.evaluator import Evaluator, popularity
from recsys.snapshot import Histories, read_histories, read_pairs
from recsys.train.progress import Progress

log = logging.getLogger("recsys.train")


class Validation:
    """Holds the validation users, their seen items and (for history models) their histories."""

    def __init__(self, paths: dict[str, str], n_items: int, t: TrainConfig, uses_history: bool,
                 max_len: int | None = None):
        train_users, train_items = read_pairs(paths[S.TRAIN])
        valid_users, valid_items = read_pairs(paths[S.VALID])
        self.k, self.progress_seconds = t.eval_k, t.progress_seconds
        self.evaluator = Evaluator(valid_users, valid_items, train_users, train_items, n_items,
                                   ks=(self.k,), max_users=t.eval_users, seed=t.seed)
        self.n_items = n_items
        self.histories: Histories | None = None
        if uses_history:
            self.histories = read_histories(paths[S.HISTORIES], max_len or t.max_len, include_valid=False,
                                            users=self.evaluator.users)
        self.baseline = self.evaluator.evaluate(popularity(train_items, n_items))
        log.info("popularity baseline: ndcg@%d %.4f over %d users", self.k,
                 self.baseline[f"ndcg@{self.k}"], self.baseline["users"])

    def evaluate(self, model: Recommender, device: torch.device | str = "cpu", with_se: bool = False):
        """The mean metrics; with `with_se`, (means, their standard errors over users)."""
        model.eval()
        ev = self.evaluator
        progress = Progress("validation", -(-len(ev.users) // ev.batch), self.progress_seconds)
        metrics = ev.evaluate(ranker(model, self.n_items, self.histories), device, on_batch=progress.update)
        return (metrics, dict(self.evaluator.standard_errors)) if with_se else metrics


def item_counts(path: str, n_items: int) -> np.ndarray:
    """Training interactions per item (popularity negatives, sampled-softmax proposals)."""
    return np.bincount(read_pairs(path)[1], minlength=n_items)
