"""Metric definitions against hand-computed values; baselines against brute-force references."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recsys.errors import MissingColumnError
from recsys.evaluation import baselines
from recsys.evaluation.job import item_categories
from recsys.ranking import exposure
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
    n_users, n_items = 30, 45  # items 40-44 are in the catalogue only: never ranked, as never published
    tu, ti = rng.integers(0, n_users, 300), rng.integers(0, 40, 300)
    vu, vi = rng.integers(0, n_users, 60), rng.integers(0, 40, 60)
    scores = torch.as_tensor(rng.normal(size=(n_users, n_items)), dtype=torch.float32)
    ev = Evaluator(vu, vi, tu, ti, n_items, ks=(5,))
    got = ev.evaluate(lambda u: scores[u])
    ndcgs = []
    for u in np.unique(vu):
        seen = set(ti[tu == u])
        rel = set(vi[vu == u])
        ranked = [i for i in np.argsort(-scores[u].numpy(), kind="stable") if i not in seen and i < 40][:5]
        dcg = sum(1 / math.log2(r + 2) for r, i in enumerate(ranked) if i in rel)
        idcg = sum(1 / math.log2(r + 2) for r in range(min(5, len(rel))))
        ndcgs.append(dcg / idcg)
    assert got["ndcg@5"] == pytest.approx(np.mean(ndcgs))
    assert got["users"] == len(np.unique(vu))


def test_coverage_and_popularity_percentile():
    # Two users, everyone gets items 0 and 1 (the most popular): coverage 2 of 4 items.
    pop = np.array([10, 5, 1, 0])
    assert popularity_percentile(pop.astype(float)).tolist() == [75.0, 50.0, 25.0, 0.0]
    ev = Evaluator(np.array([0, 1]), np.array([2, 3]), np.array([0, 1, 2, 2]), np.array([3, 2, 0, 1]), 4,
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


# --- beyond accuracy -----------------------------------------------------------------------

def test_exposure_counts_and_coverage_skip_empty_slots():
    lists = np.array([[0, 1, 2], [0, 3, -1]])  # -1: a slot the second user could not fill
    counts = exposure.exposure_counts(lists, 5)
    assert counts.tolist() == [2, 1, 1, 1, 0]
    assert exposure.coverage(counts) == pytest.approx(4 / 5)


def test_gini_of_exposure_by_hand():
    assert exposure.gini(np.array([3, 3, 3, 3])) == 0.0  # every item shown equally
    assert exposure.gini(np.array([0, 0, 8, 0])) == pytest.approx(3 / 4)  # all on one: (n-1)/n
    # The textbook form, mean absolute difference over ordered pairs / (2 * mean): 20/16 / 3
    e = np.array([2, 0, 3, 1])
    pairs = sum(abs(a - b) for a in e for b in e)
    assert pairs == 20
    assert exposure.gini(e) == pytest.approx(pairs / (2 * len(e) ** 2 * e.mean()))
    assert exposure.gini(e) == pytest.approx(10 / 24)
    assert math.isnan(exposure.gini(np.zeros(4)))  # no slots: undefined, not 0


def test_top_one_percent_share_counts_the_most_exposed_items():
    e = np.ones(150)  # ceil(1% of 150) = 2 items
    e[[7, 90]] = [50, 20]
    assert exposure.top_share(e) == pytest.approx(70 / (148 + 70))
    assert exposure.top_share(np.ones(10)) == pytest.approx(1 / 10)  # at least one item


def test_novelty_is_mean_self_information_over_slots():
    popularity = np.array([6, 2, 0, 0])  # 8 training interactions; items 2, 3 have none
    info = exposure.self_information(popularity)
    assert info.tolist() == pytest.approx([math.log2(8 / 6), 2.0, 3.0, 3.0])  # none counts one
    # slots: item 0 twice, item 1 once, item 2 once
    assert exposure.novelty(np.array([2, 1, 1, 0]), popularity) == pytest.approx(
        (2 * math.log2(8 / 6) + 2.0 + 3.0) / 4)


def test_intra_list_diversity_single_and_multi_valued_categories():
    single = exposure.category_sets(np.array([1, 1, 2, 3, 0]))  # item 4 has no category
    lists = np.array([[0, 1, 2, 3], [0, 1, 4, -1], [0, 4, -1, -1]])
    got = exposure.intra_list_diversity(lists, single)
    assert got[0] == pytest.approx(5 / 6)  # 6 pairs, one (items 0, 1) of one category
    assert got[1] == 0.0  # items 0, 1 share a category; 4 and the empty slot are left out
    assert math.isnan(got[2])  # one categorised item: no pair
    # Sets (genres): cosine distance 1 - |A ∩ B| / sqrt(|A| |B|) per pair.
    multi = exposure.category_sets(np.array([[1, 0, 0], [2, 1, 1], [2, 0, 0], [0, 0, 0], [3, 2, 1]]))
    assert multi.tolist() == [[1, 0, 0], [2, 1, 0], [2, 0, 0], [0, 0, 0], [3, 2, 1]]  # repeats dropped
    got = exposure.intra_list_diversity(np.array([[0, 1, 2, 3], [1, 4, 0, 3], [4, 4, -1, -1]]), multi,
                                        max_entries=1)  # one list at a time
    half = 1 - 1 / math.sqrt(2)  # {1} against {1, 2}, and {1, 2} against {2}
    assert got[0] == pytest.approx((half + 1.0 + half) / 3)  # item 3 has no category
    # {1, 2} and {1, 2, 3}: 1 - 2/sqrt(6); {1} and {1, 2, 3}: 1 - 1/sqrt(3)
    assert got[1] == pytest.approx((1 - 2 / math.sqrt(6) + half + 1 - 1 / math.sqrt(3)) / 3)
    assert got[2] == pytest.approx(0.0)  # the same item twice: identical sets
    assert np.allclose(exposure.intra_list_diversity(np.array([[0, 1, 2, 3]]), multi), got[:1])


def test_exposure_by_popularity_decile():
    popularity = np.arange(20)[::-1].copy()  # item 0 the most popular
    uniform = exposure.by_popularity_decile(np.ones(20), popularity)
    assert uniform.tolist() == pytest.approx([0.1] * 10)
    head = exposure.by_popularity_decile(np.r_[np.full(2, 5), np.zeros(17), 10], popularity)
    assert head.tolist() == pytest.approx([0.5] + [0.0] * 8 + [0.5])  # item 19 least popular
    rng = np.random.default_rng(0)
    shares = exposure.by_popularity_decile(rng.integers(0, 9, 37), rng.integers(0, 5, 37))
    assert len(shares) == 10 and shares.sum() == pytest.approx(1.0)


def test_evaluator_leaves_exposure_and_diversity_of_the_lists_it_ranked():
    # 3 users, 4 items; user 2 has seen items 0-2, so only one of its two slots is an item.
    tu, ti = np.array([0, 1, 2, 2, 2]), np.array([3, 3, 0, 1, 2])
    vu, vi = np.array([0, 1, 2]), np.array([0, 1, 3])
    pop = np.bincount(ti, minlength=4)
    ev = Evaluator(vu, vi, tu, ti, 4, ks=(1, 2), popularity=pop, categories=np.array([1, 1, 2, 0]))
    got = ev.evaluate(lambda u: torch.tensor([4.0, 3.0, 2.0, 1.0]).expand(len(u), -1))
    # users 0 and 1 (item 3 seen): [0, 1]; user 2: [3, empty]
    assert ev.exposure[2].tolist() == [2, 2, 0, 1]
    assert ev.exposure[1].tolist() == [2, 0, 0, 1]
    assert got["coverage@2"] == pytest.approx(3 / 4)  # item 2 fills no slot
    assert ev.diversity[2] == pytest.approx(0.0)  # [0, 1] twice: one category; user 2 no pair
    assert math.isnan(ev.diversity[1])  # one item per list: no pairs
    numbers = exposure.summary(ev.exposure[2], pop, 2, ev.diversity[2])
    assert numbers["slots@2"] == 5 and numbers["coverage@2"] == pytest.approx(0.75)
    assert numbers["gini@2"] == pytest.approx(exposure.gini(np.array([2, 2, 0, 1])))
    assert sum(numbers["exposure_by_decile@2"]) == pytest.approx(1.0)
    assert exposure.summary(ev.exposure[1], pop, 1, ev.diversity[1])["diversity@1"] is None


def test_item_categories_from_each_kind_of_items_column(tmp_path):
    """The items table as prepare writes it: codes (0 missing), lists (0 padding, 1 unknown),
    flags; rows in any order, returned in item_idx order."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq
    items = tmp_path / "items"
    items.mkdir()
    pq.write_table(pa.table({"item_idx": [1, 0, 2], "popularity": [3, 5, 0],
                             "category": [2, 1, 0], "genres": [[3, 1, 0], [2, 4, 0], [0, 0, 0]],
                             "flags": [[0.0, 1.0], [1.0, 1.0], [0.0, 0.0]], "title": [[5, 6], [7, 0], [0, 0]]}),
                   items / "part-0.parquet")
    meta = {"key": "item_idx", "numeric": ["popularity"], "categorical": {"category": {"cardinality": 3}},
            "multi_hot": {"flags": {"width": 2}},
            "lists": {"genres": {"kind": "values"}, "title": {"kind": "text"}}}
    (items / "_features.json").write_text(json.dumps(meta))
    key = "evaluate.category_column"
    assert item_categories(str(items), "category", key).tolist() == [[1], [2], [0]]
    assert item_categories(str(items), "genres", key).tolist() == [[2, 4, 0], [3, 0, 0], [0, 0, 0]]
    assert item_categories(str(items), "flags", key).tolist() == [[1, 2], [0, 2], [0, 0]]
    for column in ("title", "popularity", "nope"):  # words, a number, nothing: not categories
        with pytest.raises(MissingColumnError, match=rf"evaluate.category_column '{column}' is not a "
                                                     r"categorical, multi-valued or multi-hot column .*"
                                                     r"\(those are: category, genres, flags\)"):
            item_categories(str(items), column, key)


def test_a_tables_exposure_from_its_histogram_equals_the_item_by_item_numbers():
    rng = np.random.default_rng(0)
    for n in (1, 7, 150, 1000):
        slots = rng.integers(0, 6, n) * rng.integers(0, 2, n)
        slots[0] = 3  # at least one item shown
        values, items = np.unique(slots[slots > 0], return_counts=True)
        got = exposure.from_histogram(values[::-1], items[::-1], n, 10)  # any order
        assert got == pytest.approx({"coverage@10": exposure.coverage(slots), "gini@10": exposure.gini(slots),
                                     "top1pct_exposure@10": exposure.top_share(slots)})

