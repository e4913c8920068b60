"""Baselines scored by the same evaluator as the models: EASE and Spark ALS (popularity, the
reference training also measures, is `recsys.ranking.evaluator.popularity`).

Each returns a score function users [B] -> scores [B, n_items], so the baselines see exactly
the same users, splits and seen-item exclusion as the model they are compared with.
"""
from __future__ import annotations

import numpy as np
import torch
from pyspark.sql import DataFrame
from torch import Tensor

from recsys import schema as S
from recsys.models.autoencoders import ease_from_gram
from recsys.ranking.evaluator import Csr, ScoreFn


def ease_weights(train: Csr, users: np.ndarray, n_items: int, lam: float) -> Tensor:
    """EASE (Steck, 2019), the baseline: `ease_from_gram` of X's Gram matrix.

    X is the binary user × item matrix of `users`; the Gram matrix is items × items, which is
    why EASE is only run on catalogues below `evaluate.ease_max_items`.
    """
    gram = torch.zeros(n_items, n_items, dtype=torch.float64)
    for start in range(0, len(users), 4096):  # X in row blocks: never the whole dense X
        x = train.mask(users[start:start + 4096], n_items).to(torch.float64)
        gram += x.T @ x
    return ease_from_gram(gram, lam)


def ease(train: Csr, n_users: int, n_items: int, lam: float) -> ScoreFn:
    b = ease_weights(train, np.arange(n_users), n_items, lam)
    return lambda users: train.mask(users.numpy(), n_items).to(torch.float32) @ b


def als(train: DataFrame, n_users: int, n_items: int, *, rank: int, max_iter: int,
        reg: float, alpha: float, seed: int) -> ScoreFn:
    """Spark MLlib ALS with implicit preferences on the training split (weights as confidence)."""
    from pyspark.ml.recommendation import ALS
    model = ALS(rank=rank, maxIter=max_iter, regParam=reg, alpha=alpha, implicitPrefs=True,
                userCol=S.USER_IDX, itemCol=S.ITEM_IDX, ratingCol=S.WEIGHT, seed=seed,
                coldStartStrategy="drop").fit(train)
    u = np.zeros((n_users, rank), np.float32)
    v = np.zeros((n_items, rank), np.float32)
    for target, factors in ((u, model.userFactors), (v, model.itemFactors)):
        rows = factors.toPandas()
        target[rows["id"].to_numpy()] = np.stack(rows["features"].to_numpy())
    user_t, item_t = torch.as_tensor(u), torch.as_tensor(v)
    return lambda users: user_t[users] @ item_t.T
