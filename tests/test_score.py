"""Batch scoring into the Hive catalogue: exact top-N, rules, cold start, atomic publish."""
from __future__ import annotations

import io
import itertools
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from recsys import schema as S
from recsys.artifacts import load_artifact, publish
from recsys.cli import main as cli
from recsys.errors import ConfigError, MissingInputError, SnapshotError
from recsys.models import build_model
from recsys.models.features import load_features
from recsys.config import GateConfig
from recsys.evaluation.job import evaluate
from recsys.gate import GateError, Verdict, both, decide_exposure
from recsys.prep.pipeline import prepare
from recsys.score.job import score
from recsys.score import writer
from recsys.ranking import exposure
from recsys.ranking.topk import cap_per_category, group_ragged, ragged_mask, top_k, top_n
from recsys.snapshot import snapshot_path
from recsys.storage import Storage

from conftest import CONF, NOW, make_config, write_csv

DS = "2026-11-24"
N = 5
VERSIONS = itertools.count()


# --- the pure top-N functions --------------------------------------------------------------

def test_top_n_matches_brute_force_and_never_returns_excluded():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(6, 30, generator=g)
    # Row 1 excludes nothing, row 5 everything but item 5.
    exclude = ragged_mask(np.array([0, 3, 3, 8, 9, 29, 58]), np.r_[0:3, 0:5, 7, 0:20, 0:5, 6:30], 30)
    items, values = top_n(scores, exclude, 5)
    for row in range(6):
        allowed = [j for j in range(30) if not exclude[row, j]]
        expect = sorted(allowed, key=lambda j: -scores[row, j])[:5]
        got = [int(j) for j, v in zip(items[row], values[row]) if torch.isfinite(v)]
        assert got == expect
    assert items[5, 0] == 5 and not torch.isfinite(values[5, 1:]).any()


@pytest.mark.parametrize("n_items,k", [(20_000, 100), (20_011, 100), (40_000, 500), (1_682, 100), (3_200, 100)])
def test_two_level_top_k_gives_torch_topk_values_and_their_items(n_items, k):
    g = torch.Generator().manual_seed(n_items + k)
    scores = torch.randn(7, n_items, generator=g)
    scores[1, : n_items - 30] = float("-inf")  # fewer eligible items than k
    scores[2] = torch.randint(0, 5, (n_items,), generator=g).float()  # ties everywhere
    scores[3, -3:] = 100.0  # the best items in the columns past the last whole group
    values, items = top_k(scores, k)
    expected = torch.topk(scores, k, dim=1).values
    assert torch.equal(values, expected)
    assert torch.equal(scores.gather(1, items), values)  # each value is its item's score
    finite = torch.isfinite(values)
    for row in range(7):  # no item twice among the eligible ones
        assert len(set(items[row][finite[row]].tolist())) == int(finite[row].sum())
    assert set(items[3, :3].tolist()) == {n_items - 3, n_items - 2, n_items - 1}


def test_category_cap_keeps_score_order():
    items = torch.tensor([[4, 1, 3, 0, 2, 5]])
    scores = torch.tensor([[9.0, 8, 7, 6, 5, 4]])
    category = torch.tensor([0, 1, 0, 1, 0, 2])  # item -> category
    got, vals = cap_per_category(items, scores, category, cap=1, n=3)
    assert got.tolist() == [[4, 1, 5]] and vals.tolist() == [[9.0, 8.0, 4.0]]
    got, _ = cap_per_category(items, scores, category, cap=2, n=4)
    assert got.tolist() == [[4, 1, 3, 0]]


def test_group_ragged_gives_each_key_its_values_in_key_order():
    pair_keys = np.array([5, 1, 5, 9, 1, 5])
    pair_values = np.array([50, 10, 51, 90, 11, 52])
    offsets, flat = group_ragged(np.array([9, 7, 1, 5]), pair_keys, pair_values)
    runs = [flat[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])]
    assert runs == [[90], [], [10, 11], [50, 51, 52]]  # 7 has no pairs


def test_the_arrow_writer_refuses_a_location_pyarrow_cannot_open():
    writer.check_reachable("file:/tmp/table")  # the form the metastore prints
    with pytest.raises(ConfigError, match=r"cannot open the table location abfss://.*set score.writer: spark"):
        writer.check_reachable("abfss://box@account.dfs.core.windows.net/warehouse/t")


def test_commit_publishes_only_the_accepted_attempts(spark, tmp_path):
    run = tmp_path / "run"
    attempts = run / writer.ATTEMPTS
    attempts.mkdir(parents=True)
    for name in ("part-00000-7.parquet", "part-00001-8.parquet", "part-00001-5.parquet"):
        (attempts / name).write_bytes(name.encode())  # -5: a failed first attempt of task 1
    summaries = [{"file": "part-00000-7.parquet", "part": 0, "rows": 3, "users_model": 1,
                  "users_features": 0, "users_popular": 0, "users_opted_out": 0},
                 {"file": "part-00001-8.parquet", "part": 1, "rows": 4, "users_model": 1,
                  "users_features": 0, "users_popular": 1, "users_opted_out": 0}]
    got = writer.commit_files(Storage(spark), str(run), summaries)
    assert got == {"files": 2, "rows": 7, "users_by_source": {"model": 2, "popular": 1}}
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith(".")) == \
        ["part-00000.parquet", "part-00001.parquet"]
    assert (run / "part-00001.parquet").read_bytes() == b"part-00001-8.parquet"
    with pytest.raises(RuntimeError, match="two accepted attempts for one task"):
        writer.commit_files(Storage(spark), str(run), summaries + summaries[1:])


# --- the job ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def snapshot(spark, tmp_path_factory):
    """12 users with history, 2 known only from the users table, 15 items in 3 categories."""
    root = tmp_path_factory.mktemp("score-root")
    rng = np.random.default_rng(1)
    rows = [f"u{u},i{i},{1000 + 7 * u + i}" for u in range(12)
            for i in sorted(rng.choice(15, 6, replace=False))]
    log = write_csv(root / "log.csv", "user_id,item_id,ts", rows)
    users = write_csv(root / "users.csv", "user_id,gender", [f"u{u},{'FM'[u % 2]}" for u in range(14)])
    items = write_csv(root / "items.csv", "item_id,category", [f"i{i},c{i % 3}" for i in range(15)])
    cfg = make_config(
        root, "input.format=csv", f"input.path={log}", "dataset=toy",
        "prepare.min_user_interactions=1", "prepare.min_item_interactions=1",
        "prepare.split.method=leave_last", "prepare.split.valid_n=1", "prepare.min_row_groups=2",
        f"users={{path: {users}, format: csv, key: user_id, categorical: [gender]}}",
        f"items={{path: {items}, format: csv, key: item_id, categorical: [category]}}",
        f"score.top_n={N}")
    prepare(spark, cfg, DS, now=NOW)
    return cfg


def artifact(cfg, model: str = "mf", seed: int = 0, metrics: dict | None = None, init=None) -> str:
    """A published artifact with random weights (the real format), as train would write it;
    `init(net)` may then set them."""
    snap = snapshot_path(cfg.paths.root, cfg.dataset, DS)
    info = json.loads(Path(snap, S.COMPLETE_MARKER).read_text())
    spec = {"model": model, "n_users": info["rows"]["user_index"], "n_items": info["rows"]["item_index"],
            "dim": 8, "hidden": [16, 8], "dropout": 0.0, "id_dropout": 0.0, "temperature": 0.5}
    users = items = None
    if model == "two_tower":
        users = load_features(f"{snap}/users", S.USER_IDX, "n_train")
        items = load_features(f"{snap}/items", S.ITEM_IDX, "popularity")
        spec["user_features"], spec["item_features"] = users.shapes(), items.shapes()
    torch.manual_seed(seed)
    net = build_model(spec, users, items)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.5)
    if init is not None:
        with torch.no_grad():
            init(net)
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    version = f"{DS}_{model}{seed}_{next(VERSIONS)}"
    publish(cfg.paths.root, model, version, buf.getvalue(), {
        "config": {"model": spec}, "metrics": metrics or {}, "history": {"epochs": []},
        "data": {"ds": DS, "snapshot": snap, "user_index": f"{snap}/user_index",
                 "item_index": f"{snap}/item_index", "rows": info["rows"]}})
    return version


def with_table(cfg, name, *overrides):
    from recsys.config import load_config
    return load_config(CONF / "default.yaml",
                       [f"paths.root={cfg.paths.root}", f"input.path={cfg.input.path}",
                        "input.format=csv", "dataset=toy", f"score.top_n={N}", "train.model=mf",
                        "score.gate.enabled=false",  # random weights: the gate is tested apart
                        f"score.table=test.{name}", *overrides])


def table(spark, name, ds=DS):
    return spark.sql(f"SELECT * FROM test.{name} WHERE ds = '{ds}'").toPandas()


def brute_force(cfg, version, model="mf"):
    """Every user's top N by scoring every item with the loaded model, seen items removed, and
    items without training interactions (no model has learnt them: score.new_items)."""
    snap = snapshot_path(cfg.paths.root, cfg.dataset, DS)
    net = load_artifact(cfg.paths.root, model, version).load_model()
    seen = pq.read_table(f"{snap}/train").to_pandas()
    seen = seen._append(pq.read_table(f"{snap}/valid").to_pandas())
    uid = pq.read_table(f"{snap}/user_index").to_pandas().set_index(S.USER_IDX)[S.USER_ID]
    iid = pq.read_table(f"{snap}/item_index").to_pandas().set_index(S.ITEM_IDX)[S.ITEM_ID]
    n_items = len(iid)
    items = pq.read_table(f"{snap}/items").to_pandas()
    untrained = set(items.loc[items["popularity"] == 0, S.ITEM_IDX])
    out = {}
    for u in seen[S.USER_IDX].unique():
        with torch.no_grad():
            s = net.score(torch.tensor([u]), torch.arange(n_items)[None])[0].numpy()
        mine = set(seen[seen[S.USER_IDX] == u][S.ITEM_IDX]) | untrained
        ranked = [i for i in np.argsort(-s, kind="stable") if i not in mine][:N]
        out[uid[u]] = ([iid[i] for i in ranked], s[ranked])
    return out


def assert_matches(got, expect):
    for user, (items, scores) in expect.items():
        mine = got[got.user_id == user].sort_values("rank")
        assert mine["rank"].tolist() == list(range(1, N + 1))
        assert mine["item_id"].tolist() == items, user
        assert np.allclose(mine["score"].to_numpy(), scores, atol=1e-4)
        assert (np.diff(mine["score"].to_numpy()) <= 1e-6).all()


def test_exact_top_n_seen_excluded_and_cold_users_get_popular(spark, snapshot):
    version = artifact(snapshot, "mf")
    cfg = with_table(snapshot, "exact")
    m = score(spark, cfg, DS)
    got = table(spark, "exact")
    assert_matches(got[got.source == "model"], brute_force(snapshot, version))
    cold = got[got.source == "popular"]
    assert sorted(cold.user_id.unique()) == ["u12", "u13"]
    assert (got.model_version == version).all()
    assert m["counts"]["users_by_source"] == {"model": 12, "popular": 2}
    assert m["counts"]["rows_written"] == len(got) == 14 * N
    # The whole table's exposure, from every row (15 catalogue items, some never shown).
    slots = got.item_id.value_counts().reindex([f"i{i}" for i in range(15)], fill_value=0).to_numpy()
    assert (slots == 0).any()
    assert m["table_exposure"] == pytest.approx({f"coverage@{N}": exposure.coverage(slots),
                                                 f"gini@{N}": exposure.gini(slots),
                                                 f"top1pct_exposure@{N}": exposure.top_share(slots)})


def histories(cfg) -> dict[str, list[str]]:
    """Each user's train + valid items (original ids), oldest first (ties by item_idx)."""
    snap = snapshot_path(cfg.paths.root, cfg.dataset, DS)
    rows = pq.read_table(f"{snap}/train").to_pandas()._append(pq.read_table(f"{snap}/valid").to_pandas())
    uid = pq.read_table(f"{snap}/user_index").to_pandas().set_index(S.USER_IDX)[S.USER_ID]
    iid = pq.read_table(f"{snap}/item_index").to_pandas().set_index(S.ITEM_IDX)[S.ITEM_ID]
    rows = rows.sort_values([S.TS, S.ITEM_IDX])
    return {uid[u]: [iid[i] for i in g[S.ITEM_IDX]] for u, g in rows.groupby(S.USER_IDX)}


def test_every_row_has_a_reason_and_because_names_an_item_of_the_users_history(spark, snapshot):
    version = artifact(snapshot, "mf", seed=2)
    score(spark, with_table(snapshot, "reasons"), DS)
    got = table(spark, "reasons")
    assert got.reason.notna().all() and len(got) == 14 * N
    popular = got[got.source == "popular"]
    assert set(popular.reason) == {"popular"} and popular.because_item_id.isna().all()
    history = histories(snapshot)
    net = load_artifact(snapshot.paths.root, "mf", version).load_model()
    iid = pq.read_table(f"{snapshot_path(snapshot.paths.root, 'toy', DS)}/item_index").to_pandas()
    idx = dict(zip(iid[S.ITEM_ID], iid[S.ITEM_IDX]))
    unit = torch.nn.functional.normalize(net.item_vectors(torch.arange(len(idx))).detach(), dim=1)
    similar = got[got.reason == "similar_to_history"]
    assert len(similar) > len(got[got.source == "model"]) // 2
    for row in got[got.source == "model"].itertuples():
        mine = history[row.user_id]
        sims = (unit[[idx[h] for h in mine]] @ unit[idx[row.item_id]]).numpy()
        if sims.max() > 0:  # the history item the model finds most similar, by its own vectors
            assert row.reason == "similar_to_history" and row.because_item_id == mine[int(sims.argmax())]
        else:
            assert row.reason == "model" and row.because_item_id is None
    # Only the newest item considered: it is the reason wherever one is given.
    score(spark, with_table(snapshot, "reasons_newest", "score.reason_history=1"), DS)
    newest = table(spark, "reasons_newest")
    similar = newest[newest.reason == "similar_to_history"]
    assert len(similar) > 0
    assert (similar.because_item_id == similar.user_id.map(lambda u: history[u][-1])).all()
    score(spark, with_table(snapshot, "no_reasons", "score.reasons=false"), DS)
    off = table(spark, "no_reasons")
    assert off.reason.isna().all() and off.because_item_id.isna().all() and len(off) == 14 * N


def test_a_table_written_by_an_earlier_release_gains_the_reason_columns(spark, snapshot):
    spark.sql("CREATE DATABASE IF NOT EXISTS test")
    spark.sql("CREATE TABLE test.legacy (user_id string, item_id string, rank int, score float, "
              "source string, model_version string, ds string) USING parquet PARTITIONED BY (ds)")
    spark.sql("INSERT INTO test.legacy PARTITION (ds='2026-11-20') VALUES ('u1', 'i1', 1, 0.5, 'model', 'old')")
    artifact(snapshot, "mf")
    score(spark, with_table(snapshot, "legacy"), DS)
    old = table(spark, "legacy", "2026-11-20")
    assert len(old) == 1 and old.reason.isna().all() and old.model_version.tolist() == ["old"]
    new = table(spark, "legacy")
    assert len(new) == 14 * N and new.reason.notna().all()


def test_spark_writer_publishes_the_same_table(spark, snapshot):
    artifact(snapshot, "mf")
    m = score(spark, with_table(snapshot, "by_arrow"), DS)
    n = score(spark, with_table(snapshot, "by_spark", "score.writer=spark"), DS)
    key = ["user_id", "rank"]
    a = table(spark, "by_arrow").sort_values(key).reset_index(drop=True)
    b = table(spark, "by_spark").sort_values(key).reset_index(drop=True)
    assert len(a) == 14 * N and a.equals(b)
    assert m["counts"]["users_by_source"] == n["counts"]["users_by_source"] == {"model": 12, "popular": 2}
    files = [p.name for p in Path(m["outputs"]["location"].replace("file:", "")).iterdir()]
    assert sorted(files) == [f"part-{i:05d}.parquet" for i in range(len(files))]  # no _attempts left


def test_two_tower_scores_cold_users_from_features(spark, snapshot):
    artifact(snapshot, "two_tower")
    cfg = with_table(snapshot, "towers", "score.model=two_tower")
    score(spark, cfg, DS)
    got = table(spark, "towers")
    assert set(got[got.user_id.isin(["u12", "u13"])].source) == {"features"}
    assert len(got) == 14 * N


def test_neumf_two_stage_equals_full_ranking_when_candidates_cover_the_catalogue(spark, snapshot):
    version = artifact(snapshot, "neumf")
    cfg = with_table(snapshot, "neumf", "score.model=neumf", "score.candidates=15")
    score(spark, cfg, DS)
    got = table(spark, "neumf")
    assert_matches(got[got.source == "model"], brute_force(snapshot, version, "neumf"))


def test_business_rules(spark, snapshot, tmp_path):
    artifact(snapshot, "mf")
    block = write_csv(tmp_path / "block.csv", "item_id", ["i0", "i1", "i2"])
    cfg = with_table(snapshot, "rules", f"score.block_items={{path: {block}, format: csv}}",
                     "score.category_column=category", "score.max_per_category=2")
    score(spark, cfg, DS)
    got = table(spark, "rules")
    assert not got.item_id.isin(["i0", "i1", "i2"]).any()
    per_cat = got.assign(cat=got.item_id.str[1:].astype(int) % 3).groupby(["user_id", "cat"]).size()
    assert per_cat.max() <= 2
    assert (got.groupby("user_id")["rank"].max() <= N).all()


def test_allow_list_limits_recommendations_to_its_items(spark, snapshot, tmp_path):
    artifact(snapshot, "mf")
    allowed = [f"i{i}" for i in range(3, 10)] + ["not-in-the-catalogue"]
    allow = write_csv(tmp_path / "allow.csv", "item_id", allowed)
    score(spark, with_table(snapshot, "allowed", f"score.allow_items={{path: {allow}, format: csv}}"), DS)
    got = table(spark, "allowed")
    assert set(got.item_id) <= set(allowed[:-1])
    assert len(got[got.source == "popular"]) == 2 * N  # the popular list is filtered too, and long enough


def test_rerun_replaces_the_partition_and_a_failed_run_leaves_it(spark, snapshot, monkeypatch):
    artifact(snapshot, "mf")
    cfg = with_table(snapshot, "atomic", "score.retention_days=4")
    score(spark, cfg, "2026-11-20")
    score(spark, cfg, DS)
    before = table(spark, "atomic").sort_values(["user_id", "rank"]).reset_index(drop=True)
    location = spark.sql("DESCRIBE TABLE EXTENDED test.atomic").where("col_name = 'Location'").first()[1]
    crashed = Path(location.replace("file:", "")) / "_versions" / f"ds={DS}" / "crashed-run"
    crashed.mkdir()
    (crashed / "part-00000.parquet").write_bytes(b"half-written")  # a run killed mid-write
    assert len(table(spark, "atomic")) == len(before)  # not visible to readers
    score(spark, cfg, DS)  # idempotent: same rows, not twice as many
    assert not crashed.exists()
    again = table(spark, "atomic").sort_values(["user_id", "rank"]).reset_index(drop=True)
    assert len(again) == len(before)
    artifact(snapshot, "mf", seed=1)  # a new latest model, then a run that dies mid-write
    monkeypatch.setenv("RECSYS_FAULT", "score_batch")
    with pytest.raises(Exception, match="injected fault at score_batch"):
        score(spark, cfg, DS)
    monkeypatch.setenv("RECSYS_FAULT", "write_file")  # dies with a file half-written (no footer)
    with pytest.raises(Exception, match="injected fault at write_file"):
        score(spark, cfg, DS)
    monkeypatch.delenv("RECSYS_FAULT")
    after = table(spark, "atomic").sort_values(["user_id", "rank"]).reset_index(drop=True)
    assert after.equals(again)
    assert len(table(spark, "atomic", "2026-11-20")) == 14 * N  # the other day is untouched
    score(spark, cfg, "2026-11-25")  # 2026-11-20 is now more than 4 days older: dropped
    parts = [r[0] for r in spark.sql("SHOW PARTITIONS test.atomic").collect()]
    assert parts == [f"ds={DS}", "ds=2026-11-25"]


def test_bad_inputs_are_refused_before_anything_is_written(spark, snapshot, tmp_path):
    cfg = with_table(snapshot, "refused", "score.model=mf")
    other = make_config(tmp_path, "input.path=x", "score.table=test.refused")
    with pytest.raises(MissingInputError, match="no model is named .* and none has been selected"):
        score(spark, other, DS)
    with pytest.raises(MissingInputError, match="no trained 'mf' model under"):
        score(spark, make_config(tmp_path, "input.path=x", "score.table=test.refused", "score.model=mf"), DS)
    artifact(snapshot, "mf")
    with pytest.raises(MissingInputError, match="version 'nope' not found .*available: .*_mf0_"):
        score(spark, cfg, DS, version="nope")
    with pytest.raises(ConfigError, match="score.table must be a plain db.table"):
        with_table(snapshot, "x; DROP TABLE y")
    assert "refused" not in [t.name for t in spark.catalog.listTables("test")]


def test_changed_id_maps_are_refused(spark, snapshot, tmp_path):
    import shutil
    root = tmp_path / "root"
    shutil.copytree(Path(snapshot.paths.root) / "data", root / "data")
    cfg = with_table(snapshot, "ids")
    cfg.paths.root = str(root)
    snap = Path(snapshot_path(str(root), "toy", DS))
    from recsys.snapshot import fingerprint
    index = spark.read.parquet(str(snap / S.ITEM_INDEX))
    version = artifact(cfg, "mf")
    meta = root / "models" / "mf" / version / "data.json"
    data = json.loads(meta.read_text())
    data["fingerprints"] = {S.USER_INDEX: fingerprint(spark.read.parquet(str(snap / S.USER_INDEX)),
                                                      S.USER_ID, S.USER_IDX),
                            S.ITEM_INDEX: fingerprint(index, S.ITEM_ID, S.ITEM_IDX)}
    meta.write_text(json.dumps(data))
    table_ = pq.read_table(snap / S.ITEM_INDEX).to_pandas()
    table_[S.ITEM_IDX] = table_[S.ITEM_IDX].to_numpy()[::-1].copy()  # ids re-assigned
    shutil.rmtree(snap / S.ITEM_INDEX)
    (snap / S.ITEM_INDEX).mkdir()
    table_.to_parquet(snap / S.ITEM_INDEX / "part-0.parquet")
    with pytest.raises(SnapshotError, match="does not match the data"):
        score(spark, cfg, DS)


def test_sql_command_reads_the_table(spark, snapshot, capsys):
    artifact(snapshot, "mf")
    cfg = with_table(snapshot, "sqlread")
    score(spark, cfg, DS)
    capsys.readouterr()
    code = cli(["sql", "--conf", str(CONF / "movielens.yaml"),
                "SELECT user_id, item_id, rank FROM test.sqlread WHERE ds='2026-11-24' AND rank = 1"])
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert code == 0 and len(rows) == 14 and all(r["rank"] == 1 for r in rows)
    assert cli(["sql", "--conf", str(CONF / "movielens.yaml"), "SELECT * FROM test.missing"]) == 2


def test_gate_refuses_worse_than_popularity_or_the_published_model(spark, snapshot):
    cfg = with_table(snapshot, "gated", "score.gate.enabled=true",
                     "score.gate.max_drop_from_published=0.1")
    artifact(snapshot, "mf", metrics={"ndcg@10": 0.5, "popularity": {"ndcg@10": 0.2}})
    score(spark, cfg, "2026-11-23")
    before = table(spark, "gated", "2026-11-23")
    artifact(snapshot, "mf", seed=2, metrics={"ndcg@10": 0.1, "popularity": {"ndcg@10": 0.2}})
    with pytest.raises(GateError, match="model ndcg@10 0.1000 does not beat popularity 0.2000"):
        score(spark, cfg, DS)
    artifact(snapshot, "mf", seed=3, metrics={"ndcg@10": 0.3, "popularity": {"ndcg@10": 0.2}})
    with pytest.raises(GateError, match="more than 10% below the published model's 0.5000"):
        score(spark, cfg, DS)
    assert [r[0] for r in spark.sql("SHOW PARTITIONS test.gated").collect()] == ["ds=2026-11-23"]
    assert table(spark, "gated", "2026-11-23").equals(before)
    m = score(spark, cfg, DS, force=True)
    assert m["forced"] and not m["gate"]["passed"] and m["gate"]["published_model"] == 0.5
    assert len(table(spark, "gated")) == 14 * N
    artifact(snapshot, "mf", seed=4, metrics={})  # nothing measured: refused, unless forced
    with pytest.raises(GateError, match="no ndcg@10 for model .* run evaluate for ds=2026-11-24"):
        score(spark, cfg, DS)
    m = score(spark, cfg, DS, force=True)
    assert m["forced"] and not m["gate"]["passed"] and "run evaluate" in m["gate"]["message"]


# --- the exposure bounds of the gate ---------------------------------------------------------

def test_exposure_bounds_refuse_past_the_bound_and_name_it():
    tight = GateConfig(max_coverage_drop=0.1, max_gini_increase=0.25)  # at K=10 (ndcg@10)
    published = {"coverage@10": 0.40, "gini@10": 0.50, "novelty@10": 9.0}
    v = decide_exposure(tight, {"coverage@10": 0.40, "gini@10": 0.875}, published)
    assert not v.passed
    assert v.message == ("model gini@10 0.8750 is more than 0.25 above the published model's "
                         "0.5000 (score.gate.max_gini_increase 0.25)")
    v = decide_exposure(tight, {"coverage@10": 0.30, "gini@10": 0.50}, published)
    assert not v.passed
    assert v.message == ("model coverage@10 0.3000 is more than 10% below the published model's "
                         "0.4000 (score.gate.max_coverage_drop 0.1)")
    assert v.numbers["model"] == {"coverage@10": 0.30, "gini@10": 0.50}
    assert v.numbers["published_model"] == {"coverage@10": 0.40, "gini@10": 0.50}
    # At the bound passes (0.5 + 0.25 is exact in binary); coverage above 0.4 * 0.9 passes
    v = decide_exposure(tight, {"coverage@10": 0.361, "gini@10": 0.75}, published)
    assert v.passed and v.message == "coverage@10 0.3610 vs published 0.4000, gini@10 0.7500 vs published 0.5000"
    loose = GateConfig(max_gini_increase=0.5)  # coverage bound off: its drop is not looked at
    assert decide_exposure(loose, {"coverage@10": 0.01, "gini@10": 0.875}, published).passed


def test_exposure_bounds_without_numbers():
    gate = GateConfig(metric="ndcg@5", max_gini_increase=0.01)
    mine = {"coverage@5": 0.2, "gini@5": 0.9}
    v = decide_exposure(gate, mine, None)  # nothing published yet, or never evaluated
    assert v.passed and v.message == "score.gate.max_gini_increase 0.01 not checked: no published model's exposure numbers"
    v = decide_exposure(gate, None, {"coverage@5": 0.2, "gini@5": 0.5})
    assert not v.passed and v.message.startswith("score.gate.max_gini_increase 0.01 set, and the model "
                                                 "has no gini@5 from the evaluate job")
    accuracy_failed = Verdict(False, "model ndcg@5 0.1000 does not beat popularity", {"metric": "ndcg@5"})
    combined = both(accuracy_failed, v)
    assert not combined.passed and combined.message == accuracy_failed.message
    assert combined.numbers["metric"] == "ndcg@5" and "exposure" in combined.numbers


def test_gate_refuses_a_model_that_concentrates_exposure(spark, snapshot):
    """Real evaluate runs measure each model's lists; the score job compares the candidate's
    with the published model's (found through its version) and names the bound it breaks."""
    settings = ["score.gate.enabled=true", "score.gate.metric=ndcg@3", "evaluate.ks=[3]",
                "evaluate.als.enabled=false", "evaluate.category_column=category"]
    passing = {"ndcg@3": 0.5, "popularity": {"ndcg@3": 0.2}}  # the accuracy check is tested apart
    cfg = with_table(snapshot, "exposure", *settings, "score.gate.max_gini_increase=0.01")
    root = Path(cfg.paths.root)
    spread = artifact(snapshot, "mf", seed=4, metrics=passing)  # random: lists differ per user
    evaluate(spark, cfg, DS)
    m = score(spark, cfg, "2026-11-23")  # nothing published yet: the bound has nothing to compare
    assert m["gate"]["passed"] and "not checked" in m["gate"]["message"]

    def one_ranking(net):  # every user the same order of items: exposure on a few
        net.user.weight.zero_()
        net.item.weight.zero_()
        net.item_bias.weight.copy_(-torch.arange(net.item_bias.weight.shape[0], dtype=torch.float32)[:, None])

    same = artifact(snapshot, "mf", seed=5, metrics=passing, init=one_ranking)
    evaluate(spark, cfg, DS)
    report = json.loads((root / "reports" / DS / "evaluate.json").read_text())
    assert report["published"]["version"] == spread  # beside the model in the report
    assert set(report["beyond_accuracy_by_version"]) >= {spread, same}  # both kept on this ds
    page = (root / "reports" / DS / "index.html").read_text()
    assert f"published model {spread}" in page and "exposure_by_decile.png" in page
    mine, theirs = report["model"]["beyond_accuracy"], report["published"]["beyond_accuracy"]
    assert mine["gini@3"] > theirs["gini@3"] + 0.05 and mine["coverage@3"] < theirs["coverage@3"]
    assert 0 <= mine["diversity@3"] <= 1 and "diversity@3" in page  # by the items' category

    with pytest.raises(GateError, match=rf"model gini@3 {mine['gini@3']:.4f} is more than 0.01 above "
                                        rf"the published model's {theirs['gini@3']:.4f} "
                                        r"\(score.gate.max_gini_increase 0.01\)"):
        score(spark, cfg, "2026-11-25")
    coverage = with_table(snapshot, "exposure", *settings, "score.gate.max_coverage_drop=0.01")
    with pytest.raises(GateError, match=r"is more than 1% below the published model's .*"
                                        r"\(score.gate.max_coverage_drop 0.01\)"):
        score(spark, coverage, "2026-11-25")
    assert [r[0] for r in spark.sql("SHOW PARTITIONS test.exposure").collect()] == ["ds=2026-11-23"]
    loose = with_table(snapshot, "exposure", *settings, "score.gate.max_gini_increase=1.0",
                       "score.gate.max_coverage_drop=1.0")
    m = score(spark, loose, "2026-11-25")
    assert m["gate"]["passed"] and f"gini@3 {mine['gini@3']:.4f} vs published" in m["gate"]["message"]
    assert m["gate"]["exposure"]["published_model"]["gini@3"] == theirs["gini@3"]
