"""LightGCN: the graph prepare writes, its propagation, and an artifact that scores without it."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from recsys import schema as S
from recsys.models import build_model
from recsys.models.graph import Graph, LightGCN
from recsys.prep.graph import graph_edges


def test_edges_carry_the_symmetric_normalisation_of_train_and_of_everything(spark):
    # u0: i0, i1 (train), i2 (valid); u1: i0 (train), i2 (train)
    rows = spark.createDataFrame([(0, 0, False), (0, 1, False), (0, 2, True), (1, 0, False), (1, 2, False)],
                                 "user_idx int, item_idx int, _valid boolean")
    got = {(r.user_idx, r.item_idx): r for r in graph_edges(rows, "_valid").collect()}
    # training degrees: u0 2, u1 2; i0 2, i1 1, i2 1. All: u0 3, u1 2; i0 2, i1 1, i2 2.
    assert got[(0, 0)][S.GRAPH_NORM_TRAIN] == pytest.approx(1 / np.sqrt(2 * 2))
    assert got[(1, 2)][S.GRAPH_NORM_TRAIN] == pytest.approx(1 / np.sqrt(2 * 1))
    assert got[(0, 2)][S.GRAPH_NORM_TRAIN] is None and got[(0, 2)][S.GRAPH_VALID] == 1
    assert got[(0, 2)][S.GRAPH_NORM_ALL] == pytest.approx(1 / np.sqrt(3 * 2))
    assert got[(0, 1)][S.GRAPH_NORM_ALL] == pytest.approx(1 / np.sqrt(3 * 1))


def test_propagation_is_the_mean_of_the_layers_and_the_artifact_scores_without_the_graph():
    spec = {"model": "lightgcn", "n_users": 3, "n_items": 4, "dim": 5, "layers": 2, "fanout": None}
    users, items = np.array([0, 0, 1, 2]), np.array([0, 1, 1, 3])
    norm = np.array([0.5, 0.4, 0.3, 0.2], np.float32)
    torch.manual_seed(0)
    model = build_model(spec)
    model.set_graph(Graph(users, items, norm, 3, 4))
    e = model.node.weight.detach()
    a = torch.zeros(7, 7)
    a[users, items + 3] = torch.as_tensor(norm)
    a[items + 3, users] = torch.as_tensor(norm)
    want = (e + a @ e + a @ a @ e) / 3
    model.train()
    torch.testing.assert_close(model.user_vectors(torch.arange(3)), want[:3])
    torch.testing.assert_close(model.item_vectors(torch.arange(4)), want[3:])
    live = model.eval().score_all(torch.arange(3), 4)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    loaded = build_model(spec)  # as the score job rebuilds it: no graph
    loaded.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    loaded.eval()
    torch.testing.assert_close(loaded.score_all(torch.arange(3), 4), live)
    torch.testing.assert_close(live, want[:3] @ want[3:].T)


def test_l2_penalises_the_layer0_rows_of_the_batch_only():
    from recsys.train.losses import LOSSES
    from recsys.train.objectives import PairObjective
    spec = {"model": "lightgcn", "n_users": 3, "n_items": 4, "dim": 5, "layers": 2}
    users, items = np.array([0, 0, 1, 2]), np.array([0, 1, 1, 3])
    batch_users, batch_items = torch.tensor([0, 1]), torch.tensor([[1, 2], [0, 3]])

    def grad(l2: float) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(0)
        model = build_model(spec)
        model.set_graph(Graph(users, items, np.full(4, 0.5, np.float32), 3, 4))
        model.train()
        PairObjective(model, LOSSES["bpr"], l2=l2)(batch_users, batch_items, torch.ones(2)).backward()
        return model.node.weight.grad.to_dense(), model.node.weight.detach()  # dense: not make_sparse

    (with_l2, e), (without, _) = grad(0.5), grad(0.0)
    want = torch.zeros_like(e)
    rows = [0, 1, 3 + 1, 3 + 0]  # the batch's users and their positives
    want[rows] = 0.5 * 2 * e[rows] / 2  # d/de of l2 * mean over the batch's rows of |e|^2
    torch.testing.assert_close(with_l2 - without, want)  # nothing on u2, i2, i3 (neighbours, negatives)


def random_graph(n_users: int, n_items: int, edges: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Distinct (user, item) edges with LightGCN's symmetric normalisation."""
    rng = np.random.default_rng(seed)
    pairs = np.unique(np.stack([rng.integers(0, n_users, edges), rng.integers(0, n_items, edges)], 1), axis=0)
    users, items = pairs[:, 0], pairs[:, 1]
    du, di = np.bincount(users, minlength=n_users), np.bincount(items, minlength=n_items)
    return users, items, (1 / np.sqrt(du[users] * di[items])).astype(np.float32)


def exact(model, graph: Graph) -> torch.Tensor:
    a, layer = graph.matrix().to_dense(), model.node.weight.detach()
    total = layer.clone()
    for _ in range(model.layers):
        layer = a @ layer
        total = total + layer
    return total / (model.layers + 1)


def test_sampled_propagation_is_unbiased_and_exact_with_every_neighbour():
    """A training step reads `fanout` sampled neighbours per node; on average it must give the
    whole graph's propagation (or the model would learn for a graph it is not scored with)."""
    graph = Graph(*random_graph(40, 30, 600), 40, 30)  # degrees about 13 and 17
    torch.manual_seed(0)
    model = LightGCN(40, 30, 4, layers=2, fanout=None)
    model.set_graph(graph)
    targets = torch.tensor([0, 3, 3, 40 + 7])  # users and an item, one twice
    want = exact(model, graph)[targets]
    torch.testing.assert_close(model.propagate_to(targets), want)
    u, i = model.pair_vectors(torch.tensor([0, 3]), torch.tensor([7, 2, 7]))  # one expansion, split back
    torch.testing.assert_close(torch.cat([u, i]), exact(model, graph)[[0, 3, 40 + 7, 40 + 2, 40 + 7]])
    model.fanout = 2
    with torch.no_grad():
        draws = torch.stack([model.propagate_to(targets) for _ in range(4000)])
    assert not torch.allclose(draws[0], want, atol=1e-3)  # one draw is an estimate
    mean, se = draws.mean(0), draws.std(0) / np.sqrt(len(draws))
    assert ((mean - want).abs() < 4 * se + 1e-6).all(), ((mean - want) / se).abs().max()


def test_a_step_touches_the_rows_it_reached_not_the_table():
    """The cost of a step follows the batch: the gradient has rows for the targets and their
    sampled neighbourhoods only, however large the graph."""
    n_users, n_items = 5000, 2000
    graph = Graph(*random_graph(n_users, n_items, 100_000), n_users, n_items)
    model = build_model({"model": "lightgcn", "n_users": n_users, "n_items": n_items, "dim": 8,
                         "layers": 2, "fanout": 3})
    model.node.sparse = True  # as the train loop sets it (sparse.make_sparse)
    model.set_graph(graph)
    model.train()
    users = torch.arange(4)
    model.user_vectors(users).sum().backward()
    rows = model.node.weight.grad.coalesce().indices()[0]
    assert rows.numel() <= 4 * (1 + 3 + 3 * 3)  # the users, <= 3 items each, <= 3 users each
    assert set(users.tolist()) <= set(rows.tolist())
