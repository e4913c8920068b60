"""Metric definitions against hand-computed values; baselines against brute-force references."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recsys.evaluation import baselines
from recsys.ranking.metrics import (hit_rate_at_k, map_at_k, ndcg_at_k, precision_at_k,
                                       recall_at_k)
from recsys.ranking.evaluator import Csr, Evaluator, popularity, popularity_percentile


def one(fn, hits, n_rel):
    return float(fn(torch.tensor([hits], dtype=torch.bool), torch.tensor([n_rel]))[0])


def test_metrics_by_hand_two_relevant_both_found():
    hits, n_rel = [1, 0, 1, 0], 2
    assert one(precision_at_k, hits, n_rel) == pytest.approx(0.5)
    assert one(recall_at_k, hits, n_rel) == pytest.approx(1.0)
    assert one(hit_rate_at_k, hits, n_rel) == 1.0
    dcg, idcg = 1 / math.log2(2) + 1 / math.log2(4), 1 / math.log2(2) + 1 / math.log2(3)
    assert one(ndcg_at_k, hits, n_rel) == pytest.approx(dcg / idcg)
    assert one(map_at_k, hits, n_rel) == pytest.approx((1 / 1 + 2 / 3) / 2)


def test_metrics_by_hand_more_relevant_than_k():
    hits, n_rel = [0, 1, 0, 0], 5
    assert one(precision_at_k, hits, n_rel) == pytest.approx(0.25)
    assert one(recall_at_k, hits, n_rel) == pytest.approx(0.2)
    idcg = sum(1 / math.log2(r + 2) for r in range(4))  # min(K, 5) = 4 ideal hits
    assert one(ndcg_at_k, hits, n_rel) == pytest.approx((1 / math.log2(3)) / idcg)
    assert one(map_at_k, hits, n_rel) == pytest.approx((1 / 2) / 4)  # divided by min(K, n_rel)
    assert one(hit_rate_at_k, [0, 0, 0, 0], 5) == 0.0


def test_evaluator_matches_a_per_user_loop():
    rng = np.random.default_rng(0)
    n_users, n_items = 30, 40
    tu, ti = rng.integers(0, n_users, 300), rng.integers(0, n_items, 300)
    vu, vi = rng.integers(0, n_users, 60), rng.integers(0, n_items, 60)
    scores = torch.as_tensor(rng.normal(size=(n_users, n_items)), dtype=torch.float32)
    ev = Evaluator(vu, vi, tu, ti, n_items, ks=(5,))
    got = ev.evaluate(lambda u: scores[u])
    ndcgs = []
    for u in np.unique(vu):
        seen = set(ti[tu == u])
        rel = set(vi[vu == u])
        ranked = [i for i in np.argsort(-scores[u].numpy(), kind="stable") if i not in seen][:5]
        dcg = sum(1 / math.log2(r + 2) for r, i in enumerate(ranked) if i in rel)
        idcg = sum(1 / math.log2(r + 2) for r in range(min(5, len(rel))))
        ndcgs.append(dcg / idcg)
    assert got["ndcg@5"] == pytest.approx(np.mean(ndcgs))
    assert got["users"] == len(np.unique(vu))


def test_coverage_and_popularity_percentile():
    # Two users, everyone gets items 0 and 1 (the most popular): coverage 2 of 4 items.
    pop = np.array([10, 5, 1, 0])
    assert popularity_percentile(pop.astype(float)).tolist() == [75.0, 50.0, 25.0, 0.0]
    ev = Evaluator(np.array([0, 1]), np.array([2, 3]), np.array([0, 1]), np.array([3, 2]), 4,
                   ks=(2,), popularity=pop)
    got = ev.evaluate(popularity(np.repeat(np.arange(4), pop), 4))
    assert got["coverage@2"] == pytest.approx(0.5)
    assert got["popularity_percentile@2"] == pytest.approx((75 + 50) / 2)


def test_popularity_baseline_is_the_item_counts():
    fn = popularity(np.array([2, 2, 0, 1, 2]), 4)
    assert fn(torch.tensor([0, 3])).tolist() == [[1.0, 1.0, 3.0, 0.0]] * 2


def test_ease_equals_per_item_ridge_regressions():
    """EASE's closed form is, column by column, a ridge regression of item j on the others."""
    rng = np.random.default_rng(3)
    x = (rng.random((25, 8)) < 0.35).astype(np.float64)
    users, items = np.nonzero(x)
    lam = 2.0
    b = baselines.ease_weights(Csr(users, items, 25), np.arange(25), 8, lam).double().numpy()
    for j in range(8):
        others = [c for c in range(8) if c != j]
        a = x[:, others]
        w = np.linalg.solve(a.T @ a + lam * np.eye(7), a.T @ x[:, j])
        assert np.allclose(b[others, j], w, atol=1e-5)
        assert b[j, j] == 0.0
