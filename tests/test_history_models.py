"""History models end to end: real prepare, TorchDistributor (2 CPU processes), Petastorm, score job."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from recsys import schema as S
from recsys.errors import ConfigError, SnapshotError
from recsys.prep.pipeline import prepare
from recsys.score.job import score
from recsys.snapshot import snapshot_path
from recsys.train.job import train
from recsys.train.tasks import pair_checksum

from conftest import NOW, cycle_rows, make_config, write_csv

DS, DS2 = "2026-11-24", "2026-11-25"
N_ITEMS, N_USERS, RUN = 24, 40, 8
COMMON = ["input.format=csv", "dataset=toy", "prepare.min_user_interactions=1",
          "prepare.min_item_interactions=1", "prepare.split.method=leave_last",
          "prepare.split.valid_n=1", "prepare.min_row_groups=2", "train.num_processes=2",
          "train.dim=32", "train.heads=2", "train.blocks=1", "train.max_len=8",
          "prepare.history_len=8", "train.history_batch_size=8", "train.lr=0.01",
          "train.patience=100", "train.dropout=0.0", "train.weight_decay=0.0", "train.eval_k=5",
          "score.top_n=5", "score.gate.enabled=false", "train.per_model={}"]


def item(i: int) -> str:
    return f"i{i % N_ITEMS:02d}"


def published(spark, table: str, ds: str = DS):
    return spark.sql(f"SELECT * FROM test.{table} WHERE ds = '{ds}'").toPandas()


@pytest.fixture(scope="module", params=["sasrec", "gru4rec"])
def sequence_model(request, spark, tmp_path_factory):
    """A sequence model trained (fit, then refit) on the cycle log and its table published."""
    model = request.param
    root = tmp_path_factory.mktemp(f"seq-{model}")
    rows, nxt = cycle_rows()
    log = write_csv(root / "log.csv", "user_id,item_id,ts", rows)
    cfg = make_config(root, f"input.path={log}", *COMMON, f"train.model={model}", "train.epochs=30",
                      f"score.table=test.seq_{model}")
    prepare(spark, cfg, DS, now=NOW)
    m = train(spark, cfg, DS)
    score(spark, cfg, DS)
    return model, root, cfg, m, nxt


def test_a_sequence_model_ranks_the_next_item_first(spark, sequence_model):
    model, _, _, m, nxt = sequence_model
    top = published(spark, f"seq_{model}")
    first = top[top["rank"] == 1].set_index("user_id")["item_id"]
    right = sum(first[u] == item(n) for u, n in nxt.items())
    assert right >= 0.9 * N_USERS, f"{model}: next item first for {right}/{N_USERS}"
    assert set(top["source"]) == {"model"}
    assert m["metrics"]["ndcg@5"] > 0.8  # validation: the held-out item is each user's next one


def test_each_user_once_per_epoch_and_the_refit_adds_the_validation_rows(sequence_model):
    _, root, cfg, m, _ = sequence_model
    snap = Path(snapshot_path(cfg.paths.root, cfg.dataset, DS))
    tr, va = pq.read_table(snap / S.TRAIN), pq.read_table(snap / S.VALID)
    users = np.concatenate([tr[S.USER_IDX].to_numpy(), va[S.USER_IDX].to_numpy()])
    items = np.concatenate([tr[S.ITEM_IDX].to_numpy(), va[S.ITEM_IDX].to_numpy()])
    fit_sum = pair_checksum(tr[S.USER_IDX].to_numpy(), tr[S.ITEM_IDX].to_numpy(), N_ITEMS)
    history = json.loads((Path(m["outputs"]["artifact"]) / "history.json").read_text())
    for epoch in history["epochs"]:  # the fit: each user once, validation rows left out
        assert epoch["rows"] == N_USERS and epoch["checksum"] == fit_sum
        assert len(set(epoch["steps_per_rank"])) == 1
    assert len(history["refit"]) == m["metrics"]["best_epoch"] + 1
    for epoch in history["refit"]:  # the refit: train + valid
        assert epoch["checksum"] == pair_checksum(users, items, N_ITEMS) != fit_sum
    config = json.loads((Path(m["outputs"]["artifact"]) / "config.json").read_text())
    assert config["refit"]["data"] == [S.TRAIN, S.VALID]


def test_tonights_history_is_read_without_retraining(spark, sequence_model, tmp_path):
    """The model of DS scores DS2's snapshot: a user who moved on gets the item after their new
    last one, and a user the model never saw is scored from their history (source model),
    although a new item (i05x) renumbers the catalogue between the two snapshots."""
    model, root, _, _, nxt = sequence_model
    rows, _ = cycle_rows()
    start = (nxt["u0"] - RUN) % N_ITEMS
    rows += [f"u0,{item(start + RUN)},2000", f"u0,{item(start + RUN + 1)},2010",
             "newbie,i05x,900"] + [f"newbie,{item(3 + j)},{1000 + 10 * j}" for j in range(5)]
    log = write_csv(tmp_path / "log2.csv", "user_id,item_id,ts", rows)
    cfg = make_config(root, f"input.path={log}", *COMMON, f"train.model={model}",
                      f"score.table=test.seq2_{model}")
    prepare(spark, cfg, DS2, now=NOW)
    m = score(spark, cfg, DS2)
    assert m["inputs"]["model_ds"] == DS and m["inputs"]["histories_from"].endswith(f"ds={DS2}")
    top = published(spark, f"seq2_{model}", DS2)
    first = top[top["rank"] == 1].set_index("user_id")
    assert first.loc["u0", "item_id"] == item(start + RUN + 2)  # was item(start + RUN) on DS
    assert first.loc["newbie", "source"] == "model" and first.loc["newbie", "item_id"] == item(8)
    assert "i05x" not in set(top["item_id"])  # the model has no vector for it


@pytest.fixture(scope="module")
def blocks(spark, tmp_path_factory):
    """Two groups of users, each with 6 of its own block's 12 items."""
    root = tmp_path_factory.mktemp("blocks")
    rng = np.random.default_rng(3)
    rows = []
    for u in range(N_USERS):
        block = u % 2
        for j, i in enumerate(rng.choice(12, 6, replace=False)):
            rows.append(f"u{u},b{block}_{i:02d},{1000 + 10 * j}")
    log = write_csv(root / "log.csv", "user_id,item_id,ts", rows)
    cfg = make_config(root, f"input.path={log}", *COMMON, "train.epochs=40",
                      "train.vae_hidden=[32, 8]", "train.vae_dropout=0.2", "train.kl_anneal_epochs=10",
                      "train.ease_lambdas=[1.0, 10.0]")
    prepare(spark, cfg, DS, now=NOW)
    return root, cfg


@pytest.mark.parametrize("model", ["multvae", "ease"])
def test_autoencoders_recover_a_planted_block_structure(spark, blocks, model):
    root, cfg = blocks
    cfg = make_config(root, f"input.path={cfg.input.path}", *COMMON, "train.epochs=40",
                      "train.vae_hidden=[32, 8]", "train.vae_dropout=0.2", "train.kl_anneal_epochs=10",
                      "train.ease_lambdas=[1.0, 10.0]", f"score.table=test.blocks_{model}",
                      f"train.model={model}")
    m = train(spark, cfg, DS, model=model)
    assert m["counts"]["refit_epochs"] >= 1
    score(spark, cfg, DS)
    top = published(spark, f"blocks_{model}")
    top = top[top["rank"] <= 3]
    own = (top["item_id"].str[1] == top["user_id"].str[1:].astype(int).mod(2).astype(str)).mean()
    assert own >= 0.9, f"{model}: {own:.0%} of the top 3 from the user's own block"


def test_history_model_inputs_are_checked_before_training(spark, blocks, tmp_path):
    root, cfg = blocks
    shutil.copytree(root / "data", tmp_path / "data")
    base = [f"input.path={cfg.input.path}", *COMMON, "train.epochs=1", "train.refit=false"]
    small = make_config(tmp_path, *base, "train.max_len=3")
    m = train(spark, small, DS, model="multvae")  # histories of 6 items, read 3 at a time
    assert m["counts"]["histories"] == {"users": N_USERS, "longer_than_max_len": N_USERS}
    with pytest.raises(ConfigError, match="ease inverts an items x items matrix: the catalogue .* "
                                          "24 items, above train.ease_max_items=10"):
        train(spark, make_config(tmp_path, *base, "train.ease_max_items=10"), DS, model="ease")
    with pytest.raises(ConfigError, match=r"train.max_len=9 is longer than the histories of the "
                                          r"snapshot at .* \(history_len 8\)"):
        train(spark, make_config(tmp_path, *base, "train.max_len=9"), DS, model="gru4rec")
    with pytest.raises(ConfigError, match="train.item_content adds the item side table's features to "
                                          "gru4rec's item embeddings, and the items of ds=2026-11-24 "
                                          "have none"):
        train(spark, make_config(tmp_path, *base, "train.item_content=true"), DS, model="gru4rec")
    shutil.rmtree(Path(snapshot_path(str(tmp_path), "toy", DS)) / S.HISTORIES)
    with pytest.raises(SnapshotError, match="sasrec reads users' histories, and the snapshot .* has "
                                            "none .* re-run prepare for ds=2026-11-24"):
        train(spark, make_config(tmp_path, *base), DS, model="sasrec")


def test_ease_chooses_how_many_newest_items_to_read_on_validation(spark, tmp_path):
    """On the cycle log the next item follows the newest ones: summed over a whole history, EASE
    also favours the item before the walk began; over the newest three, only the next one.
    Validation must choose three, the artifact carry it, and the table rank the next item first."""
    rows, nxt = cycle_rows()
    log = write_csv(tmp_path / "log.csv", "user_id,item_id,ts", rows)
    cfg = make_config(tmp_path, f"input.path={log}", *COMMON, "train.model=ease", "train.ease_lambdas=[20.0]",
                      "train.ease_max_lens=[3, 50]", "score.table=test.ease_newest")
    prepare(spark, cfg, DS, now=NOW)
    m = train(spark, cfg, DS)
    artifact = Path(m["outputs"]["artifact"])
    history = json.loads((artifact / "history.json").read_text())["epochs"]
    by_len = {h["max_len"]: h["valid_ndcg@5"] for h in history}
    assert set(by_len) == {3, 8}  # 50 is capped at train.max_len
    assert by_len[3] > by_len[8] + 0.1, by_len
    assert json.loads((artifact / "config.json").read_text())["model"]["max_len"] == 3
    score(spark, cfg, DS)
    first = published(spark, "ease_newest").query("rank == 1").set_index("user_id")["item_id"]
    assert sum(first[u] == item(n) for u, n in nxt.items()) >= 0.9 * N_USERS
