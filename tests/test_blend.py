"""A blend's scores are the weighted sum of its members' per-user standardised scores."""
from __future__ import annotations

import math

import pytest
import torch

from recsys.models import build_model
from recsys.models.blend import standardise_


def test_standardise_by_hand():
    z = standardise_(torch.tensor([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]]))
    assert torch.allclose(z[0], torch.tensor([-1.0, 0.0, 1.0]))  # mean 2, sample std 1
    assert torch.equal(z[1], torch.zeros(3))  # a constant row carries no preference


def test_blend_of_mf_and_ease_by_hand():
    """MF scores p_u · q_i + b_i and EASE scores (sum of B rows of the history), blended 0.75 /
    0.25 on a 3-item catalogue, against the arithmetic written out."""
    mf = {"model": "mf", "n_users": 1, "n_items": 3, "dim": 1}
    ease = {"model": "ease", "n_items": 3, "max_len": 2}
    blend = build_model({"model": "blend", "members": [mf, ease], "weights": [0.75, 0.25]})
    state = blend.state_dict()
    state["members.0.user.weight"] = torch.tensor([[2.0]])
    state["members.0.item.weight"] = torch.tensor([[1.0], [0.0], [-1.0]])
    state["members.0.item_bias.weight"] = torch.zeros(3, 1)
    b = torch.tensor([[0.0, 3.0, 0.0], [1.0, 0.0, 4.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # row 3: padding
    state["members.1.weights"] = b
    blend.load_state_dict(state)
    got = blend.score_users(torch.tensor([0]), torch.tensor([[0, 1]]))[0]
    mf_scores = [2.0, 0.0, -2.0]  # mean 0, std 2 -> [1, 0, -1]
    ease_scores = [1.0, 3.0, 4.0]  # rows 0 + 1; mean 8/3, std sqrt(7/3)
    mean, std = 8 / 3, math.sqrt(((1 - 8 / 3) ** 2 + (3 - 8 / 3) ** 2 + (4 - 8 / 3) ** 2) / 2)
    expect = [0.75 * (m / 2) + 0.25 * (e - mean) / std for m, e in zip(mf_scores, ease_scores)]
    assert got.tolist() == pytest.approx(expect, abs=1e-6)
    assert blend.reads_history and not blend.uses_history  # mf needs its user table


@pytest.mark.parametrize("with_ease", [True, False], ids=["member-by-member", "folded"])
def test_the_score_job_ranks_a_blend_as_the_blend_scores_it(with_ease):
    """The score job's blend paths give the lists and scores of `Blend.score_users` + exclusion
    + top-N, over batches of users with ragged histories: with EASE among the members, each
    member scored into a reused block; with factorised members only (a sequence model and a
    user-table model), one matrix product of the scaled, stacked vectors (`Blend.fold`)."""
    import io

    import numpy as np

    from recsys.ranking.topk import exclude_, ragged_tail, top_n
    from recsys.score.scorer import Plan, Scorer

    torch.manual_seed(0)
    n_users, n_items, max_len = 7, 50, 6
    spec = {"model": "blend", "weights": [0.5, 0.3, 0.2], "members": [
        {"model": "sasrec", "n_items": n_items, "dim": 8, "max_len": max_len, "blocks": 1, "heads": 2,
         "dropout": 0.0},
        {"model": "mf", "n_users": n_users, "n_items": n_items, "dim": 4},
        {"model": "ease", "n_items": n_items, "max_len": max_len}]}
    if not with_ease:
        spec = {**spec, "weights": [0.7, 0.3], "members": spec["members"][:2]}
    blend = build_model(spec).eval()
    if with_ease:
        state = blend.state_dict()
        state["members.2.weights"] = torch.randn(n_items + 1, n_items)
        state["members.2.weights"][n_items] = 0.0
        blend.load_state_dict(state)
    buf = io.BytesIO()
    torch.save(blend.state_dict(), buf)
    plan = Plan(version="v", model=spec, weights=buf.getvalue(), item_ids=[str(i) for i in range(n_items)],
                top_n=5, candidates=0, blocked=None, category=None, cap=None,
                popular=np.arange(5), popular_scores=np.zeros(5), batch_cells=4 * n_items, max_len=max_len)
    scorer = Scorer(plan)
    assert (scorer.folded is None) == with_ease
    rng = np.random.default_rng(0)
    users = np.arange(n_users)
    lengths = rng.integers(1, 10, n_users)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    seen = np.concatenate([rng.choice(n_items, n, replace=False) for n in lengths])
    for lo in range(0, n_users, scorer.rows_per_batch):  # the job's batches
        hi = min(n_users, lo + scorer.rows_per_batch)
        off = offsets[lo:hi + 1] - offsets[lo]
        flat = seen[offsets[lo]:offsets[hi]]
        items, scores = scorer.rank(users[lo:hi], off, flat)
        with torch.no_grad():
            want = blend.score_users(torch.as_tensor(users[lo:hi]), torch.as_tensor(ragged_tail(off, flat, max_len)))
        want_items, want_scores = top_n(exclude_(want, off, flat), None, 5)
        assert np.array_equal(items, want_items.numpy())
        assert np.allclose(scores, want_scores.numpy(), atol=1e-5)
