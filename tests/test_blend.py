"""A blend's scores are the weighted sum of its members' per-user standardised scores."""
from __future__ import annotations

import math

import pytest
import torch

from recsys.models import build_model
from recsys.models.blend import standardise


def test_standardise_by_hand():
    z = standardise(torch.tensor([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]]))
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
