"""The train step: check the snapshot, launch data-parallel workers with TorchDistributor, publish the model.

Everything a user can get wrong (no snapshot, an empty or mis-shaped one, an unknown model, a
history model on a snapshot without histories, a catalogue too large for EASE) is refused here,
before a worker starts. Checkpoints go to `<root>/models/<model>/_runs/<ds>/`; `--resume`
continues from the last one. EASE has a closed form: it is fitted here, not on the workers.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from pyspark.sql import SparkSession

from recsys import fsio
from recsys import schema as S
from recsys import snapshot
from recsys.artifacts import models_dir, new_version, publish
from recsys.config import MODELS, Config, TrainConfig, to_dict
from recsys.errors import ConfigError, SnapshotError
from recsys.manifest import Manifest
from recsys.models import DEFAULT_LOSS, HISTORY_MODELS
from recsys.models.features import FeatureTable, load_features
from recsys.storage import Storage, join, resolve_root
from recsys.train import failures
from recsys.train.fitted import fit_als, fit_ease
from recsys.train.loop import save_state, train_worker
from recsys.train.select import select_model
from recsys.train.tasks import TASK_OF

log = logging.getLogger("recsys.train")
FITTED = {"ease": fit_ease, "als": fit_als}  # fitted on Spark and the driver, not by SGD
# What training reads, and the Parquet physical types it needs.
REQUIRED = {S.USER_IDX: "int32", S.ITEM_IDX: "int32", S.WEIGHT: "float"}


def check_snapshot(root: str, dataset: str, ds: str, world: int) -> snapshot.Snapshot:
    """The published snapshot, after checking what training relies on."""
    snap = snapshot.open_snapshot(root, dataset, ds)
    train_path = snap.dataset(S.TRAIN)
    if snap.rows.get(S.TRAIN, 0) == 0:
        raise SnapshotError(f"the training data of ds={ds} at {snap.path} is empty")
    groups = snapshot.row_groups(snapshot.require_columns(train_path, REQUIRED))
    if groups < world:
        raise SnapshotError(f"{train_path} has {groups} row groups, fewer than the "
                            f"{world} training workers: lower train.num_processes or raise "
                            f"prepare.min_row_groups and re-run prepare")
    return snap


def check_recency(snap: snapshot.Snapshot, name: str, t: TrainConfig, counts: dict[str, Any]) -> TrainConfig:
    """`train.recency_half_life` needs the rows' recency, which a snapshot without timestamps
    does not have (every row counts alike there: recorded in counts) and one written before
    prepare wrote it lacks (refused)."""
    if not snap.has_time:
        log.info("%s: the snapshot of ds=%s has no timestamps, so train.recency_half_life is not "
                 "applied", name, snap.ds)
        counts["recency_half_life"] = {"configured": t.recency_half_life, "used": None, "why": "no timestamps"}
        return dataclasses.replace(t, recency_half_life=None)
    for dataset in (S.TRAIN, S.VALID):
        path = snap.dataset(dataset)
        if S.RECENCY not in snapshot.require_columns(path, {}).schema.names:
            raise SnapshotError(f"train.recency_half_life weighs rows by their recency, and {path} "
                                f"has no {S.RECENCY!r} column (written by an older prepare): "
                                f"re-run prepare for ds={snap.ds}")
    return t


def check_histories(snap: snapshot.Snapshot, name: str, t: TrainConfig) -> dict[str, int]:
    """A history model needs the snapshot's histories, at least `max_len` long; returns how
    many users' histories are longer than max_len (their oldest items are left out)."""
    path = snap.dataset(S.HISTORIES)
    if snap.history_len is None or not fsio.exists(path):
        raise SnapshotError(f"{name} reads users' histories, and the snapshot at {snap.path} has "
                            f"none (written before histories existed?): re-run prepare for ds={snap.ds}")
    if t.max_len > snap.history_len:
        raise ConfigError(f"train.max_len={t.max_len} is longer than the histories of the snapshot "
                          f"at {snap.path} (history_len {snap.history_len}): lower it, or re-run "
                          f"prepare with prepare.history_len >= {t.max_len}")
    snapshot.require_columns(path, {S.USER_IDX: "int32", S.HISTORY_ITEMS: "list<element: int32>"})
    lengths = fsio.read_table(path, [S.HISTORY_LENGTH, S.HISTORY_DROPPED]).to_pandas()
    longer = (lengths[S.HISTORY_LENGTH] + lengths[S.HISTORY_DROPPED]) > t.max_len
    return {"users": len(lengths), "longer_than_max_len": int(longer.sum())}


def check_graph(snap: snapshot.Snapshot, t: TrainConfig) -> int:
    """lightgcn needs the snapshot's graph, no larger than every worker can hold in memory."""
    edges = snap.rows.get(S.GRAPH)
    if edges is None or not fsio.exists(snap.dataset(S.GRAPH)):
        raise SnapshotError(f"lightgcn propagates over the user-item graph, and the snapshot at "
                            f"{snap.path} has none (written before graphs existed?): re-run prepare "
                            f"for ds={snap.ds}")
    if edges > t.graph_max_edges:
        raise ConfigError(f"lightgcn holds the user-item graph in every worker's memory (about 24 bytes "
                          f"an edge): the graph of ds={snap.ds} has {edges} edges, above "
                          f"train.graph_max_edges={t.graph_max_edges}; choose another model or raise "
                          "the limit where the workers have the memory")
    return edges


CONTENT_INPUT = ("sasrec", "gru4rec")  # models whose item embeddings can read the side table


def model_spec(t: TrainConfig, name: str, snap: snapshot.Snapshot) -> dict[str, Any]:
    spec = {"model": name, "n_users": snap.rows[S.USER_INDEX], "n_items": snap.rows[S.ITEM_INDEX],
            "dim": t.dim, "hidden": list(t.hidden), "dropout": t.dropout,
            "id_dropout": t.id_dropout, "temperature": t.temperature}
    if name in HISTORY_MODELS:
        spec.update(max_len=t.max_len, blocks=t.blocks, heads=t.heads,
                    vae_hidden=list(t.vae_hidden), vae_dropout=t.vae_dropout)
    if name == "lightgcn":
        spec.update(layers=t.graph_layers, fanout=t.graph_fanout)
    if name == "two_tower":
        spec["user_features"] = load_features(snap.dataset(S.USERS), S.USER_IDX, "n_train").shapes()
        spec["item_features"] = load_features(snap.dataset(S.ITEMS), S.ITEM_IDX, "popularity").shapes()
    if name in CONTENT_INPUT and t.item_content:
        items = load_features(snap.dataset(S.ITEMS), S.ITEM_IDX, "popularity").shapes()
        if not FeatureTable.has_content(items):
            raise ConfigError(f"train.item_content adds the item side table's features to {name}'s "
                              f"item embeddings, and the items of ds={snap.ds} have none (no "
                              "input.items, or it has no text, values or categories)")
        spec["item_features"] = items
    return spec


class TrainingError(RuntimeError):
    """A training worker failed; the message carries that worker's error."""


def launch(spec: dict[str, Any], num_processes: int, use_gpu: bool, local_mode: bool) -> dict[str, Any]:
    """Run `train_worker` on `num_processes` data-parallel workers; rank 0's result comes back.

    When a worker fails, the job fails with the cause the workers reported (`failures.py`),
    not just TorchDistributor's "failed during training".
    """
    from pyspark.ml.torch.distributor import TorchDistributor
    failures.clear(spec["run_dir"])  # a report left by an earlier attempt is not this one's cause
    distributor = TorchDistributor(num_processes=num_processes, local_mode=local_mode, use_gpu=use_gpu)
    try:
        return distributor.run(train_worker, spec)
    except Exception as exc:
        raise TrainingError(failures.explain(spec["run_dir"], num_processes)) from exc


def train(spark: SparkSession, cfg: Config, ds: str, *, model: str | None = None,
          resume: bool = False) -> Manifest:
    """Train `model` (default `train.model`) on snapshot `ds`, or, when neither names one, the
    candidates of `train.candidates` and the winner on validation (`select.py`)."""
    name = model or cfg.train.model
    if name is not None and name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    root = resolve_root(cfg.paths.root)
    m = Manifest("train", ds, to_dict(cfg))
    store = Storage(spark)
    with m.recorded(lambda data: store.write_json(join(root, "runs", ds, "train.json"), data)):
        if name is None:
            selection = select_model(
                spark, cfg, ds, lambda n: train_model(spark, cfg, ds, n, resume=resume),
                check=lambda: check_snapshot(root, cfg.dataset, ds, cfg.train.num_processes))
            winner = selection["winner"]
            m.data["inputs"] = {"snapshot": selection["snapshot"], "candidates": cfg.train.candidates}
            m.data["outputs"] = {"artifact": winner["artifact"], "version": winner["version"],
                                 "model": winner["model"], "selection": selection["path"]}
            m.data["metrics"] = winner["metrics"]
            m.data["leaderboard"] = selection["leaderboard"]
            m.data["counts"] = {"bakeoff": selection["bakeoff"], "trained": selection["trained"],
                                "candidates": len(selection["leaderboard"])}
            return m
        result = train_model(spark, cfg, ds, name, resume=resume)
        m.data.update({k: result[k] for k in ("inputs", "outputs", "metrics", "counts")})
        m.data["timings_s"].update(result["timings_s"])
    return m


def train_model(spark: SparkSession, cfg: Config, ds: str, name: str, *, resume: bool = False) -> dict[str, Any]:
    """Train one model on snapshot `ds` and publish its artifact; what the manifest records."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    t = cfg.train.for_model(name)
    root = resolve_root(cfg.paths.root)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    snap = check_snapshot(root, cfg.dataset, ds, t.num_processes)
    counts: dict[str, Any] = {}
    if TASK_OF.get(name) == "sequence" and not snap.has_time:
        raise SnapshotError(f"{name} learns the order of each user's items, and the snapshot of "
                            f"ds={ds} has no timestamps (input.columns.ts: null): choose a model "
                            "that reads no order (mf, ease, multvae, als, ...)")
    if name in HISTORY_MODELS and not snap.has_time and snap.history_len:
        # Without timestamps a history is in an arbitrary order: its "newest" items would be an
        # arbitrary subset, so a model reads all that prepare kept, and ease tries no shorter window.
        if t.max_len < snap.history_len:
            log.info("%s: the snapshot of ds=%s has no timestamps, so max_len %d -> %d (all of each "
                     "history prepare kept)", name, ds, t.max_len, snap.history_len)
            counts["max_len"] = {"configured": t.max_len, "used": snap.history_len, "why": "no timestamps"}
            t = dataclasses.replace(t, max_len=snap.history_len)
        t = dataclasses.replace(t, ease_max_lens=[t.max_len])
    if (TASK_OF.get(name) == "pairs" or name == "als") and t.recency_half_life is not None:
        t = check_recency(snap, name, t, counts)
    if name in HISTORY_MODELS:
        counts["histories"] = check_histories(snap, name, t)
    if name == "lightgcn":
        counts["graph_edges"] = check_graph(snap, t)
    if name == "ease" and snap.rows[S.ITEM_INDEX] > t.ease_max_items:
        raise ConfigError(f"ease inverts an items x items matrix: the catalogue of ds={ds} has "
                          f"{snap.rows[S.ITEM_INDEX]} items, above train.ease_max_items="
                          f"{t.ease_max_items}; choose another model")
    use_gpu = torch.cuda.is_available() if t.use_gpu is None else t.use_gpu
    run_dir = join(models_dir(root, name), "_runs", ds)
    if not resume:
        fsio.delete_dir(run_dir)
    loss = t.loss or DEFAULT_LOSS.get(name, "softmax")
    spec = {
        "model": model_spec(t, name, snap), "train": dataclasses.asdict(t), "loss": loss,
        "task": TASK_OF.get(name), "use_gpu": use_gpu, "resume": resume, "run_dir": run_dir,
        "history_len": snap.history_len,
        "urls": {k: fsio.url(snap.dataset(k)) for k in (S.TRAIN, S.VALID, S.HISTORIES)},
        "rows": snap.rows,
        "paths": {k: snap.dataset(k) for k in (S.TRAIN, S.VALID, S.USERS, S.ITEMS, S.HISTORIES, S.GRAPH)},
    }
    inputs = {"snapshot": snap.path, "rows": snap.rows}
    with _timed(timings, "train"):
        if name in FITTED:
            log.info("fitting %s on %s (Spark and the driver)", name, snap.path)
            result = FITTED[name](spark, snap, spec, t)
            save_state(join(run_dir, "final.pt"), result.pop("state"))
            save_state(join(run_dir, "best.pt"), result.pop("fit_state"))
        else:
            log.info("training %s on %s with %d %s worker(s), loss %s", name, snap.path,
                     t.num_processes, "GPU" if use_gpu else "CPU", loss)
            result = launch(spec, t.num_processes, use_gpu, t.local_mode)
    if result["best_epoch"] < 0:
        raise RuntimeError("training finished without a single evaluated epoch")
    k = result["eval_k"]
    best = result["history"][[h["epoch"] for h in result["history"]].index(result["best_epoch"])]
    metrics = {"model": name, "best_epoch": result["best_epoch"],
               **{key[len("valid_"):]: v for key, v in best.items() if key.startswith("valid_")},
               "popularity": {key: v for key, v in result["baseline"].items()},
               "beats_popularity": result["best_ndcg"] > result["baseline"][f"ndcg@{k}"]}
    weights = "final.pt" if name in FITTED else ("refit.pt" if t.refit else "best.pt")
    refit = {"epochs": len(result["refit"]), "data": [S.TRAIN, S.VALID]} if result.get("refit") else None
    version = new_version(ds)
    with _timed(timings, "publish"):
        path = publish(root, name, version, fsio.read_bytes(join(run_dir, weights)), {
            "config": {"model": result.get("model", spec["model"]), "loss": loss, "train": spec["train"],
                       "refit": refit,
                       **({"setting": result["setting"]} if "setting" in result else {})},
            "metrics": metrics,
            "history": {"epochs": result["history"], "refit": result.get("refit")},
            "data": {"ds": ds, "dataset": cfg.dataset, "snapshot": snap.path,
                     "user_index": snap.dataset(S.USER_INDEX),
                     "item_index": snap.dataset(S.ITEM_INDEX),
                     "rows": snap.rows, "snapshot_time": snap.snapshot_time,
                     "fingerprints": snapshot.id_map_digests(spark, snap)},
        }, fit_weights=fsio.read_bytes(join(run_dir, "best.pt")) if weights != "best.pt" else None)
    timings["total"] = round(time.perf_counter() - start, 3)
    return {"inputs": inputs, "outputs": {"artifact": path, "version": version, "model": name},
            "metrics": metrics, "timings_s": timings,
            "counts": {"epochs": len(result["history"]), "train_rows": snap.rows[S.TRAIN],
                       "refit_epochs": refit["epochs"] if refit else 0,
                       "samples_per_s": best.get("samples_per_s"), "workers": result["world"],
                       "device": result["device"], **counts}}


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = round(time.perf_counter() - t0, 3)
