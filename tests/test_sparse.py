"""Sparse id tables: row optimisers, their checkpoints, and the exchange between real workers."""
from __future__ import annotations

import sys

import numpy as np

from pyspark import cloudpickle
import pytest
import torch
from pyspark.ml.torch.distributor import TorchDistributor

from recsys.config import TrainConfig
from recsys.models import build_model
from recsys.train.loop import load_state, save_state
from recsys.train.losses import LOSSES
from recsys.train.objectives import PairObjective
from recsys.train.sparse import GradientExchange, Optimizers, make_sparse, touched
from recsys.train.tasks import PairTask, phase_counts

N_USERS, N_ITEMS, DIM = 1000, 500, 8
MF = {"model": "mf", "n_users": N_USERS, "n_items": N_ITEMS, "dim": DIM}


def setup(optimizer: str, **train) -> tuple[torch.nn.Module, Optimizers]:
    torch.manual_seed(0)
    net = PairObjective(build_model(MF), LOSSES["bpr"])
    t = TrainConfig(optimizer=optimizer, lr=0.05, epochs=5, **train)
    return net, Optimizers(net, t)


def batch(step: int, users: int = N_USERS, items: int = N_ITEMS, size: int = 16):
    g = torch.Generator().manual_seed(step)
    return (torch.randint(0, users, (size,), generator=g), torch.randint(0, items, (size, 3), generator=g),
            torch.ones(size))


def take_step(net, opt, b, exchange=None) -> float:
    loss = net(*b)
    opt.zero_grad()
    loss.backward()
    if exchange is not None:
        exchange()
    opt.step()
    return float(loss.detach())


def tables(net) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.model.state_dict().items()}


@pytest.mark.parametrize("optimizer", ["sparse_adam", "rowwise_adagrad"])
def test_sparse_tables_give_the_dense_loss_and_sparse_adam_its_first_step(optimizer):
    dense, dense_opt = setup("adam", weight_decay=0.0)
    sparse, sparse_opt = setup(optimizer, weight_decay=0.0)
    b = batch(0)
    assert take_step(sparse, sparse_opt, b) == pytest.approx(take_step(dense, dense_opt, b), abs=0)
    assert sparse.model.user.weight.grad.is_sparse and not dense.model.user.weight.grad.is_sparse
    if optimizer == "sparse_adam":  # Adam's first step moves only rows with a gradient: the same
        for k, v in tables(dense).items():
            torch.testing.assert_close(tables(sparse)[k], v, rtol=1e-6, atol=1e-7)


def test_the_tables_step_at_table_lr_and_the_dense_layers_at_lr():
    """neumf: row-wise Adagrad's first step moves a row by table_lr x g / rms(g); Adam's first
    step moves each dense weight by lr (the sign of its gradient)."""
    torch.manual_seed(0)
    spec = {"model": "neumf", "n_users": N_USERS, "n_items": N_ITEMS, "dim": DIM, "hidden": [8], "dropout": 0.0}
    net = PairObjective(build_model(spec), LOSSES["bce"])
    opt = Optimizers(net, TrainConfig(optimizer="rowwise_adagrad", lr=0.001, table_lr=0.5, weight_decay=0.0))
    before = tables(net)
    net(*batch(0)).backward()
    rows, g = touched(net.model.gmf_user.weight.grad)
    dense = {n: p.grad.clone() for n, p in net.model.named_parameters() if not p.grad.is_sparse}
    opt.step()
    after = tables(net)
    expected = -0.5 * g / g.pow(2).mean(1, keepdim=True).sqrt()
    torch.testing.assert_close(after["gmf_user.weight"][rows] - before["gmf_user.weight"][rows], expected,
                               rtol=1e-3, atol=1e-4)
    for name, grad in dense.items():
        moved = (after[name] - before[name])[grad != 0]
        torch.testing.assert_close(moved, -0.001 * grad[grad != 0].sign(), rtol=1e-2, atol=1e-6)


@pytest.mark.parametrize("optimizer", ["sparse_adam", "rowwise_adagrad"])
def test_rows_never_touched_keep_their_initial_values(optimizer):
    net, opt = setup(optimizer, weight_decay=0.01)  # decay too applies to touched rows only
    before = tables(net)
    for step in range(5):
        take_step(net, opt, batch(step, users=10, items=20))
    after = tables(net)
    assert torch.equal(after["user.weight"][10:], before["user.weight"][10:])
    assert torch.equal(after["item.weight"][20:], before["item.weight"][20:])
    assert not torch.equal(after["user.weight"][:10], before["user.weight"][:10])
    # Dense Adam with weight decay moves every row: what the sparse path avoids.
    net, opt = setup("adam", weight_decay=0.01)
    take_step(net, opt, batch(0, users=10, items=20))
    take_step(net, opt, batch(1, users=10, items=20))
    assert not torch.equal(tables(net)["user.weight"][10:], before["user.weight"][10:])


@pytest.mark.parametrize("optimizer", ["sparse_adam", "rowwise_adagrad"])
def test_a_checkpoint_restores_the_row_optimiser_state(optimizer, tmp_path):
    net, opt = setup(optimizer)
    for step in range(3):
        take_step(net, opt, batch(step))
    save_state(str(tmp_path / "last.pt"), {"model": net.model.state_dict(), "optimizer": opt.state_dict()})
    ckpt = load_state(str(tmp_path / "last.pt"))  # weights_only: the state must be plain tensors

    resumed, resumed_opt = setup(optimizer)
    resumed.model.load_state_dict(ckpt["model"])
    resumed_opt.load_state_dict(ckpt["optimizer"])
    cold, cold_opt = setup(optimizer)  # the weights without the optimiser state
    cold.model.load_state_dict(ckpt["model"])
    for step in range(3, 5):
        take_step(net, opt, batch(step))
        take_step(resumed, resumed_opt, batch(step))
        take_step(cold, cold_opt, batch(step))
    for k, v in tables(net).items():
        assert torch.equal(tables(resumed)[k], v), k
    assert not torch.equal(tables(cold)["user.weight"], tables(net)["user.weight"])


def test_a_checkpoint_of_lazy_adams_earlier_state_layout_resumes_the_same():
    """Before the fused step, both moments of a row lived side by side in one `moments` table
    with a float64 step count; a run resumed from such a checkpoint continues as if unbroken."""
    net, opt = setup("sparse_adam")
    take_step(net, opt, batch(1))
    state = opt.state_dict()
    for s in state["optimizers"][0]["state"].values():
        s["moments"] = torch.cat([s.pop("exp_avg"), s.pop("exp_avg_sq")], dim=1)
        s["step"] = s["step"].double()
    old, old_opt = setup("sparse_adam")
    old.model.load_state_dict(net.model.state_dict())
    old_opt.load_state_dict(state)
    for n, o in ((net, opt), (old, old_opt)):
        take_step(n, o, batch(2))
    for k, v in tables(net).items():
        torch.testing.assert_close(tables(old)[k], v, rtol=0, atol=0)


@pytest.mark.parametrize("optimizer", ["sparse_adam", "rowwise_adagrad"])
def test_a_table_updated_whole_tells_autograd_it_changed(optimizer):
    """A full softmax gives a table a dense gradient and the row optimiser updates it in place;
    autograd's version counter must move, or a tensor saved for backward from the old weights
    would be taken as current after the step."""
    net, opt = setup(optimizer)
    weight = net.model.item.weight
    (net.model.item.weight * 1.0).sum().backward()  # read whole, not looked up: a dense gradient
    assert not weight.grad.is_sparse
    version = weight._version
    opt.step()
    assert weight._version > version


def _workers_step(optimizer: str, steps: int) -> dict:
    """On each of 2 Gloo workers: `steps` steps on this rank's own batches, gradients exchanged."""
    import os

    import torch.distributed as dist
    dist.init_process_group("gloo")
    rank = int(os.environ["RANK"])
    net, opt = setup(optimizer)
    exchange = GradientExchange(net, dist.get_world_size())
    sent, seen = 0, []
    for step in range(steps):
        loss = net(*batch(100 * step + rank))
        opt.zero_grad()
        loss.backward()
        # Whether this rank has another batch: on the step before the last only rank 1 does.
        exchanged = exchange(more=step < steps - 2 or (step == steps - 2 and rank == 1))
        sent, seen = sent + exchanged.sent, seen + [exchanged.more]
        opt.step()
    out = [None, None]
    dist.all_gather_object(out, {"rank": rank, "tables": tables(net), "sent": sent, "more": seen})
    dist.destroy_process_group()
    return out


@pytest.mark.parametrize("optimizer", ["sparse_adam", "adam"])
def test_two_workers_end_with_identical_tables_equal_to_one_process_on_both_batches(spark, optimizer):
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    steps = 4
    ranks = TorchDistributor(num_processes=2, local_mode=True, use_gpu=False).run(_workers_step, optimizer, steps)
    assert {r["rank"] for r in ranks} == {0, 1}
    # Every rank learns that some rank has another batch, until none has.
    assert ranks[0]["more"] == ranks[1]["more"] == [True] * (steps - 1) + [False]
    for k, v in ranks[0]["tables"].items():
        assert torch.equal(ranks[1]["tables"][k], v), f"{k} differs between the workers"
    # One process stepping on the mean loss of both ranks' batches takes the same steps.
    net, opt = setup(optimizer)
    for step in range(steps):
        loss = (net(*batch(100 * step)) + net(*batch(100 * step + 1))) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
    for k, v in tables(net).items():
        torch.testing.assert_close(ranks[0]["tables"][k], v, rtol=1e-5, atol=1e-6)
    full = (N_USERS * DIM + N_ITEMS * (DIM + 1)) * 4 * steps  # every row, every step
    if optimizer == "sparse_adam":  # the rows of the batches only
        assert 0 < ranks[0]["sent"] < full / 5
    else:
        assert ranks[0]["sent"] == full + 4 * steps  # and the one-float "more" flag of each step


@pytest.mark.parametrize("n_items, most_rows", [(5000, 64 + 32), (500, None)])
def test_above_the_threshold_per_row_negatives_come_from_a_pool_shared_by_the_step(n_items, most_rows):
    """neumf (bce, 8 negatives per row): a step on a large catalogue touches the batch's
    positives and a pool of sampled_negatives items, not B x 9 rows."""
    spec = {"model": {"model": "neumf", "n_users": 100, "n_items": n_items, "dim": 8, "hidden": [16, 8],
                      "dropout": 0.0}, "loss": "bce"}
    t = TrainConfig(negatives=8, sampled_negatives=32, full_softmax_max_items=1000)
    task = PairTask(spec, t, phase_counts(np.ones(n_items), np.zeros(n_items)))
    net = task.objective(build_model(spec["model"]))
    Optimizers(net, t)
    g = torch.Generator().manual_seed(0)
    b = {"user_idx": np.arange(64, dtype=np.int32), "item_idx": np.arange(64, dtype=np.int32),
         "weight": np.ones(64, np.float32)}
    task.step(net, b, True, "fit", 0, g, torch.device("cpu")).loss.backward()
    rows, _ = touched(net.model.gmf_item.weight.grad)
    if most_rows is None:  # a small catalogue keeps independent draws per row
        assert len(rows) > 64 + 32
    else:
        assert len(rows) <= most_rows


def test_neumf_scores_as_its_definition_and_its_gradient_holds_each_row_once():
    """neumf applies its MLP's first layer per user and per distinct item, not per pair: the same
    function as w · [p_u ⊙ q_i ; MLP([p'_u ; q'_i])], and a step's sparse gradient has each row it
    touched once (coalescing and exchanging it cost the distinct rows, not the B x (1 + K) lookups)."""
    torch.manual_seed(0)
    m = build_model({"model": "neumf", "n_users": 50, "n_items": 40, "dim": 8, "hidden": [16, 8, 4], "dropout": 0.0})
    users, items = torch.arange(12) % 10, torch.randint(0, 40, (12, 5))
    u, i = users.unsqueeze(1).expand(12, 5).reshape(-1), items.reshape(-1)
    pairwise = m.predict(torch.cat([m.gmf_user(u) * m.gmf_item(i),
                                    m.mlp(torch.cat([m.mlp_user(u), m.mlp_item(i)], dim=1))], dim=1))
    torch.testing.assert_close(m.score(users, items), pairwise.view(12, 5))
    make_sparse(m)
    m.score(users, items).sum().backward()
    assert m.gmf_user.weight.grad._nnz() == m.mlp_user.weight.grad._nnz() == 12  # one per row of the batch
    assert m.gmf_item.weight.grad._nnz() == m.mlp_item.weight.grad._nnz() == len(items.unique())
