"""Training with real Petastorm and a real TorchDistributor running 2 CPU processes."""
from __future__ import annotations

import io
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from recsys import schema as S
from recsys.config import TrainConfig
from recsys.artifacts import load_artifact
from recsys.errors import ConfigError, MissingInputError, SnapshotError
from recsys.models import build_model
from recsys.models.base import Dropout
from recsys.prep.pipeline import prepare
from recsys.snapshot import snapshot_path
from recsys.train.job import TrainingError, train
from recsys.train.negatives import NegativeSampler
from recsys.train.tasks import PairTask, pair_checksum, phase_counts, row_weights

from conftest import NOW, make_config, write_csv

DS = "2026-11-24"
N_USERS, N_ITEMS = 16, 20
FAST = ["train.model=mf", "train.per_model={}", "train.num_processes=2", "train.batch_size=16", "train.dim=16", "train.hidden=[32, 16]",
        "train.lr=0.05", "train.negatives=4", "train.shuffle_buffer=32", "train.patience=100",
        "train.eval_k=5", "train.weight_decay=0.0", "train.dropout=0.0"]


def toy_log(path: Path) -> Path:
    """Two taste groups: users 0-7 like items 0-9, users 8-15 like items 10-19 (7 each)."""
    rows = []
    for u in range(N_USERS):
        group = u // 8
        for j in range(7):
            rows.append(f"u{u},i{group * 10 + (u + j) % 10},{1000 + 10 * j + u}")
    return write_csv(path, "user_id,item_id,ts", rows)


@pytest.fixture(scope="module")
def snapshot(spark, tmp_path_factory):
    """A prepared toy snapshot: 6 training rows per user in 4 row groups, 1 validation row."""
    root = tmp_path_factory.mktemp("train-root")
    log = toy_log(root / "log.csv")
    cfg = make_config(root, "input.format=csv", f"input.path={log}", "dataset=toy",
                      "prepare.min_user_interactions=1", "prepare.min_item_interactions=1",
                      "prepare.split.method=leave_last", "prepare.split.valid_n=1",
                      "prepare.min_row_groups=4", *FAST)
    prepare(spark, cfg, DS, now=NOW)
    return root, cfg


def fresh(snapshot, tmp_path, *overrides):
    """A private copy of the snapshot (tests may damage theirs) and a config pointing at it."""
    root, _ = snapshot
    shutil.copytree(root / "data", tmp_path / "data")
    log = root / "log.csv"
    return make_config(tmp_path, "input.format=csv", f"input.path={log}", "dataset=toy", *FAST,
                       *overrides)


def train_table(cfg) -> pa.Table:
    return pq.read_table(f"{snapshot_path(cfg.paths.root, cfg.dataset, DS)}/{S.TRAIN}")


def test_every_row_once_per_epoch_and_equal_steps(spark, snapshot, tmp_path):
    cfg = fresh(snapshot, tmp_path, "train.epochs=2", "train.min_epochs=2")
    m = train(spark, cfg, DS, model="mf")
    table = train_table(cfg)
    expected = pair_checksum(table[S.USER_IDX].to_numpy(), table[S.ITEM_IDX].to_numpy(), N_ITEMS)
    history = json.loads((Path(m["outputs"]["artifact"]) / "history.json").read_text())["epochs"]
    assert len(history) == 2
    for epoch in history:
        assert epoch["rows"] == table.num_rows == 96
        assert epoch["checksum"] == expected
        assert all(r > 0 for r in epoch["rows_per_rank"])  # both ranks read a shard
        assert len(set(epoch["steps_per_rank"])) == 1
    # The refit (train.refit, the default): as many epochs as the fit's best, over train + valid.
    valid = pq.read_table(f"{snapshot_path(cfg.paths.root, cfg.dataset, DS)}/{S.VALID}")
    everything = pair_checksum(np.concatenate([table[S.USER_IDX].to_numpy(), valid[S.USER_IDX].to_numpy()]),
                               np.concatenate([table[S.ITEM_IDX].to_numpy(), valid[S.ITEM_IDX].to_numpy()]),
                               N_ITEMS)
    refit = json.loads((Path(m["outputs"]["artifact"]) / "history.json").read_text())["refit"]
    assert m["metrics"]["best_epoch"] == 1  # train.min_epochs=2: the first epoch is not a candidate
    assert len(refit) == 2
    for epoch in refit:
        assert epoch["rows"] == 96 + 16 and epoch["checksum"] == everything
        assert len(set(epoch["steps_per_rank"])) == 1


def test_uneven_shards_get_equal_steps_without_hanging(spark, snapshot, tmp_path):
    cfg = fresh(snapshot, tmp_path, "train.epochs=1")
    path = Path(snapshot_path(cfg.paths.root, cfg.dataset, DS)) / S.TRAIN
    table = train_table(cfg)
    shutil.rmtree(path)
    path.mkdir()
    # Row groups of 80, 4, 8 and 4 rows: shard 0 gets far more rows than shard 1.
    pq.write_table(table, path / "part-0.parquet", row_group_size=80)
    pq.write_table(table.slice(80, 4), path / "part-1.parquet")
    pq.write_table(table.slice(84, 8), path / "part-2.parquet")
    pq.write_table(table.slice(92, 4), path / "part-3.parquet")
    m = train(spark, cfg, DS, model="mf")
    (epoch,) = json.loads((Path(m["outputs"]["artifact"]) / "history.json").read_text())["epochs"]
    assert epoch["rows"] == 96 + 16  # the first file holds all 96 rows, the others 16 again
    assert epoch["steps_per_rank"][0] == epoch["steps_per_rank"][1]
    assert epoch["rows_per_rank"][0] != epoch["rows_per_rank"][1]


@pytest.mark.parametrize("model", ["mf", "neumf", "two_tower", "lightgcn"])
def test_each_model_overfits_a_tiny_dataset(spark, snapshot, tmp_path, model):
    # lightgcn reads every neighbour here (no degree is above 7) through the same sampling and
    # expansion code: at fanout 5, on 16 users, passing is down to the seed (of seeds 1-4 and 42,
    # one gives 12/16, with the joint expansion and with the separate one before it);
    # test_graph checks that the sample is unbiased.
    fanout = ["train.graph_fanout=8"] if model == "lightgcn" else []
    cfg = fresh(snapshot, tmp_path, "train.epochs=40", "train.id_dropout=0.0", "train.refit=false", *fanout)
    m = train(spark, cfg, DS, model=model)
    artifact = load_artifact(cfg.paths.root, model)
    history = json.loads((Path(artifact.path) / "history.json").read_text())["epochs"]
    if model == "two_tower":
        # A softmax over the 20 items, 6 of them each user's training items: the loss cannot go
        # below log 6 (1.79, from log 20 = 3.0); it must cover most of the way there.
        floor = np.log(6)
        assert history[-1]["loss"] - floor < 0.4 * (history[0]["loss"] - floor)
    else:  # a third of the uniform negatives are in fact liked items here, which bounds the loss
        assert history[-1]["loss"] < 0.67 * history[0]["loss"]
    net = artifact.load_model()
    table = train_table(cfg)
    users, items = table[S.USER_IDX].to_numpy(), table[S.ITEM_IDX].to_numpy()
    top = net.score_all(torch.arange(N_USERS), N_ITEMS).argmax(1).numpy()
    known = sum(top[u] in set(items[users == u]) for u in range(N_USERS))
    # Chance would put a liked item first for 7/20 of the users (5.6 of 16).
    assert known >= N_USERS - 2, f"{model}: the top item is a training positive for {known}/16"
    assert m["metrics"]["model"] == model


def final_weights(cfg, model="mf") -> dict[str, torch.Tensor]:
    path = Path(cfg.paths.root) / "models" / model / "_runs" / DS / "last.pt"
    return torch.load(io.BytesIO(path.read_bytes()), weights_only=True)["model"]


def test_resume_after_a_failed_worker_matches_an_uninterrupted_run(spark, snapshot, tmp_path,
                                                                   monkeypatch):
    whole = fresh(snapshot, tmp_path / "a", "train.epochs=4")
    train(spark, whole, DS, model="mf")

    broken = fresh(snapshot, tmp_path / "b", "train.epochs=4")
    monkeypatch.setenv("RECSYS_FAULT", "train_epoch_end:rank=1:epoch=1")
    start = time.monotonic()
    with pytest.raises(TrainingError, match="worker rank 1: RuntimeError: injected fault at train_epoch_end"):
        train(spark, broken, DS, model="mf")
    assert time.monotonic() - start < 120  # the job failed; it did not hang
    manifest = json.loads((tmp_path / "b" / "runs" / DS / "train.json").read_text())
    assert manifest["status"] == "failed"
    with pytest.raises(MissingInputError):  # nothing was published
        load_artifact(broken.paths.root, "mf")

    monkeypatch.delenv("RECSYS_FAULT")
    m = train(spark, broken, DS, model="mf", resume=True)
    assert [h["epoch"] for h in json.loads(
        (Path(m["outputs"]["artifact"]) / "history.json").read_text())["epochs"]] == [0, 1, 2, 3]
    a, b = final_weights(whole), final_weights(broken)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_a_killed_worker_fails_the_job(spark, snapshot, tmp_path, monkeypatch):
    cfg = fresh(snapshot, tmp_path, "train.epochs=2")
    monkeypatch.setenv("RECSYS_FAULT", "train_step:rank=1:step=2:exit")
    start = time.monotonic()
    with pytest.raises(TrainingError, match="rank 1 died without reporting an error"):
        train(spark, cfg, DS, model="mf")
    assert time.monotonic() - start < 120
    with pytest.raises(MissingInputError):  # nothing was published
        load_artifact(cfg.paths.root, "mf")
    monkeypatch.delenv("RECSYS_FAULT")
    m = train(spark, cfg, DS, model="mf", resume=True)  # the re-run completes
    assert m["status"] == "completed"


def test_artifact_is_tensors_only_and_latest_points_to_it(spark, snapshot, tmp_path):
    cfg = fresh(snapshot, tmp_path, "train.epochs=1")
    m = train(spark, cfg, DS, model="two_tower")
    path = Path(m["outputs"]["artifact"])
    state = torch.load(path / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert (path.parent / "latest").read_text() == m["outputs"]["version"]
    data = json.loads((path / "data.json").read_text())
    assert data["ds"] == DS and data["user_index"].endswith(f"ds={DS}/{S.USER_INDEX}")
    assert set(json.loads((path / "metrics.json").read_text())) >= {"ndcg@5", "popularity"}


def test_bad_inputs_are_refused_before_workers_start(spark, snapshot, tmp_path):
    cfg = fresh(snapshot, tmp_path, "train.epochs=1")
    with pytest.raises(MissingInputError, match="no complete prepared snapshot for ds=2026-01-01"):
        train(spark, cfg, "2026-01-01")
    with pytest.raises(ConfigError, match="unknown model 'bert4rec'"):
        train(spark, cfg, DS, model="bert4rec")
    cfg.train.graph_max_edges = 100  # the toy graph has 112 edges
    with pytest.raises(ConfigError, match="112 edges, above train.graph_max_edges=100"):
        train(spark, cfg, DS, model="lightgcn")
    path = Path(snapshot_path(cfg.paths.root, cfg.dataset, DS)) / S.TRAIN
    table = train_table(cfg)
    shutil.rmtree(path)
    path.mkdir()
    bad = table.set_column(table.schema.get_field_index(S.ITEM_IDX), S.ITEM_IDX,
                           pa.array([str(x) for x in table[S.ITEM_IDX].to_pylist()]))
    pq.write_table(bad, path / "part-0.parquet", row_group_size=24)
    with pytest.raises(SnapshotError, match="column 'item_idx' is string, expected int32"):
        train(spark, cfg, DS)
    pq.write_table(table.drop([S.WEIGHT]), path / "part-0.parquet", row_group_size=24)
    with pytest.raises(SnapshotError, match="has no column 'weight'"):
        train(spark, cfg, DS)
    with pytest.raises(SnapshotError, match="1 row groups, fewer than the 2 training workers"):
        pq.write_table(table, path / "part-0.parquet")
        train(spark, cfg, DS)
    pq.write_table(table.drop([S.RECENCY]), path / "part-0.parquet", row_group_size=24)  # an older prepare's
    cfg.train.recency_half_life = 5.0
    with pytest.raises(SnapshotError, match="train.recency_half_life weighs rows by their recency, and "
                                            ".*/train has no 'recency' column .* re-run prepare for ds=2026-11-24"):
        train(spark, cfg, DS)


def test_recency_half_life_halves_a_rows_weight_every_half_life():
    batch = {S.WEIGHT: np.array([1.0, 1.0, 3.0], np.float32), S.RECENCY: np.array([0, 4, 8], np.int32)}
    plain = TrainConfig(use_weights=False)
    assert row_weights(batch, plain).tolist() == [1.0, 1.0, 1.0]
    assert row_weights(batch, TrainConfig(use_weights=False, recency_half_life=4.0)).tolist() == [1.0, 0.5, 0.25]
    # with the implicit weight: log2(1 + w) times the decay
    assert row_weights(batch, TrainConfig(recency_half_life=4.0)).tolist() == pytest.approx([1.0, 0.5, 0.5])


def test_items_no_training_row_shows_are_never_negatives():
    """An item without training rows (a new catalogue entry; during the fit, one seen only in the
    validation rows) is never drawn and is out of the full softmax: otherwise it is a negative at
    every step and a positive at none, and every such item learns the same "never clicked"."""
    counts = np.array([3, 0, 5, 0, 1, 0])  # items 1, 3 and 5 have no training rows
    g = torch.Generator().manual_seed(0)
    for popularity in (False, True):
        drawn = NegativeSampler(counts, popularity).sample(200, 50, g)
        assert set(drawn.unique().tolist()) == {0, 2, 4}
    spec = {"model": {"model": "mf", "n_users": 4, "n_items": 6, "dim": 4}, "loss": "softmax"}
    task = PairTask(spec, TrainConfig(), phase_counts(counts, np.array([0, 0, 0, 2, 0, 0])))
    batch = {S.USER_IDX: np.array([0, 1, 2, 3], np.int32), S.ITEM_IDX: np.array([0, 2, 4, 0], np.int32),
             S.WEIGHT: np.ones(4, np.float32)}
    touched = {}
    for phase in ("fit", "refit"):  # the refit trains on the validation rows too: item 3 is known
        task.set_phase(phase)
        net = task.objective(build_model(spec["model"]))
        loss = task.step(net, batch, True, phase, 0, g, torch.device("cpu")).loss
        assert torch.isfinite(loss)
        loss.backward()
        touched[phase] = (net.model.item.weight.grad.abs().sum(1) > 0).nonzero().flatten().tolist()
    assert touched == {"fit": [0, 2, 4], "refit": [0, 2, 3, 4]}


def test_the_models_dropout_drops_p_of_the_activations_and_scales_the_rest():
    """neumf's and two_tower's dropout (a cheaper mask: 16 random bits per element) is dropout:
    a share p zeroed, a fresh mask each call, the rest scaled by 1 / (1 - p), the gradient through
    the same mask, nothing dropped in eval."""
    torch.manual_seed(0)
    drop, x = Dropout(0.25), torch.ones(300, 400, requires_grad=True)
    y = drop(x)
    assert (y == 0).float().mean().item() == pytest.approx(0.25, abs=0.005)
    torch.testing.assert_close(y[y != 0], torch.full_like(y[y != 0], 4 / 3))
    assert not torch.equal(drop(x), y)
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())
    drop.eval()
    assert torch.equal(drop(x), x)


def test_als_reads_the_same_recency_weights(spark, snapshot):
    from recsys.snapshot import open_snapshot
    from recsys.train.fitted import _pairs
    root, cfg = snapshot
    snap = open_snapshot(str(root), cfg.dataset, DS)
    rows = train_table(cfg).to_pandas().set_index([S.USER_IDX, S.ITEM_IDX])
    got = _pairs(spark, snap, False, 2.0).toPandas().set_index([S.USER_IDX, S.ITEM_IDX])[S.WEIGHT]
    want = rows[S.WEIGHT] * 0.5 ** (rows[S.RECENCY] / 2.0)
    assert rows[S.RECENCY].max() >= 2 and len(got) == len(want)
    np.testing.assert_allclose(got.loc[want.index].to_numpy(), want.to_numpy(), rtol=1e-6)
