"""The reason on each row: the history item the model's own similarity names, and the codes."""
from __future__ import annotations

import numpy as np
import torch

from recsys.models.autoencoders import EASE
from recsys.models.blend import Blend
from recsys.models.mf import MatrixFactorization
from recsys.score.reasons import MODEL, NEW_ITEM, POPULAR, REASONS, SIMILAR, USER_FEATURES, Reasons

ITEMS = np.array([[0, 1, 2], [3, 4, 0], [1, 2, 3]])
SCORES = np.array([[3.0, 2.0, 1.0], [3.0, 2.0, -np.inf], [1.0, 1.0, 1.0]])
HISTORY = np.array([[-1, 4, 5], [-1, -1, -1], [5, 0, 4]])  # newest on the right, -1 pads


def cosine_choice(v: torch.Tensor, rec: int, hist: list[int]) -> int | None:
    u = torch.nn.functional.normalize(v, dim=1)
    sims = [float(u[rec] @ u[h]) for h in hist]
    best = int(np.argmax(sims))
    return hist[best] if sims[best] > 0 else None


def test_factorised_model_names_the_most_cosine_similar_history_item():
    torch.manual_seed(3)
    mf = MatrixFactorization(3, 6, 4)
    v = mf.item_vectors(torch.arange(6)).detach()
    because, reason = Reasons(mf, v).explain(ITEMS, SCORES, HISTORY, "model")
    for b in range(len(ITEMS)):
        hist = [h for h in HISTORY[b] if h >= 0]
        for n, item in enumerate(ITEMS[b]):
            if not np.isfinite(SCORES[b, n]):
                assert because[b, n] == -1
                continue
            want = cosine_choice(v, item, hist) if hist else None
            assert because[b, n] == (-1 if want is None else want)
            assert reason[b, n] == (MODEL if want is None else SIMILAR)
    assert (reason[1] == MODEL).all()  # no history: personalised, but nothing to name
    assert (because[reason == SIMILAR] >= 0).all()


def test_ease_names_the_history_item_with_the_largest_contribution_to_the_score():
    torch.manual_seed(4)
    b = torch.randn(6, 6)
    b.fill_diagonal_(0.0)
    ease = EASE(6, max_len=10).set_weights(b)
    because, reason = Reasons(ease, None).explain(ITEMS, SCORES, HISTORY, "model")
    for u in (0, 2):
        hist = [h for h in HISTORY[u] if h >= 0]
        for n, item in enumerate(ITEMS[u]):
            contrib = b[hist, item]
            if contrib.max() > 0:
                assert because[u, n] == hist[int(contrib.argmax())]
                assert reason[u, n] == SIMILAR
            else:
                assert because[u, n] == -1 and reason[u, n] == MODEL


def test_a_blend_weighs_its_members_similarities():
    torch.manual_seed(5)
    mf = MatrixFactorization(3, 6, 4)
    v = mf.item_vectors(torch.arange(6)).detach()
    b = torch.randn(6, 6)
    b.fill_diagonal_(0.0)
    ease = EASE(6, max_len=10).set_weights(b)
    alone, _ = Reasons(mf, v).explain(ITEMS, SCORES, HISTORY, "model")
    mostly_mf, _ = Reasons(Blend([mf, ease], [0.999, 0.001]), [v, None]).explain(ITEMS, SCORES, HISTORY, "model")
    assert (mostly_mf == alone).all()
    ease_alone, _ = Reasons(ease, None).explain(ITEMS, SCORES, HISTORY, "model")
    mostly_ease, _ = Reasons(Blend([mf, ease], [0.001, 0.999]), [v, None]).explain(ITEMS, SCORES, HISTORY, "model")
    assert (mostly_ease == ease_alone).all()
    assert not (alone == ease_alone).all()  # the two members disagree somewhere on these rows


def test_codes_for_new_items_and_for_users_not_scored_from_history():
    mf = MatrixFactorization(3, 6, 4)
    v = mf.item_vectors(torch.arange(6)).detach()
    new = np.zeros(6, bool)
    new[[2, 3]] = True
    _, reason = Reasons(mf, v, new).explain(ITEMS, SCORES, HISTORY, "model")
    assert (reason[np.isin(ITEMS, [2, 3])] == NEW_ITEM).all()
    assert not (reason[~np.isin(ITEMS, [2, 3])] == NEW_ITEM).any()
    for source, code in (("popular", POPULAR), ("features", USER_FEATURES)):
        because, reason = Reasons(mf, v).explain(ITEMS, SCORES, np.empty((3, 0), np.int64), source)
        assert (reason == code).all() and (because == -1).all()
    assert REASONS[SIMILAR] == "similar_to_history"
