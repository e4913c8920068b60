"""The train step: check the snapshot, launch DDP workers with TorchDistributor, publish the model.

Everything a user can get wrong (no snapshot, an empty or mis-shaped one, an unknown model) is
refused here, before a worker starts. Checkpoints go to `<root>/models/<model>/_runs/<ds>/`;
`--resume` continues from the last one.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

import torch
from pyspark.sql import SparkSession

from recsys import fsio
from recsys import schema as S
from recsys import snapshot
from recsys.artifacts import models_dir, new_version, publish
from recsys.config import MODELS, Config, to_dict
from recsys.errors import ConfigError, SnapshotError
from recsys.manifest import Manifest
from recsys.models import DEFAULT_LOSS
from recsys.models.features import load_features
from recsys.storage import Storage, join, resolve_root
from recsys.train.loop import train_worker

log = logging.getLogger("recsys.train")
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


def model_spec(cfg: Config, name: str, snap: snapshot.Snapshot) -> dict[str, Any]:
    t = cfg.train
    spec = {"model": name, "n_users": snap.rows[S.USER_INDEX], "n_items": snap.rows[S.ITEM_INDEX],
            "dim": t.dim, "hidden": list(t.hidden), "dropout": t.dropout,
            "id_dropout": t.id_dropout, "temperature": t.temperature}
    if name == "two_tower":
        spec["user_features"] = load_features(snap.dataset(S.USERS), S.USER_IDX, "n_train").shapes()
        spec["item_features"] = load_features(snap.dataset(S.ITEMS), S.ITEM_IDX, "popularity").shapes()
    return spec


class TrainingError(RuntimeError):
    """A training worker failed; the message carries that worker's error."""


def launch(spec: dict[str, Any], num_processes: int, use_gpu: bool, local_mode: bool) -> dict[str, Any]:
    """Run `train_worker` on `num_processes` DDP workers; rank 0's result comes back.

    When a worker fails, the job fails with the worker's own error (written by the worker
    to `<run_dir>/errors/`), not just TorchDistributor's "failed during training".
    """
    from pyspark.ml.torch.distributor import TorchDistributor
    errors = join(spec["run_dir"], "errors")
    fsio.delete_dir(errors)
    distributor = TorchDistributor(num_processes=num_processes, local_mode=local_mode, use_gpu=use_gpu)
    try:
        return distributor.run(train_worker, spec)
    except Exception as exc:
        found = sorted((json.loads(fsio.read_bytes(join(errors, name))) for name in fsio.listdir(errors)),
                       key=lambda r: r["time"])
        silent = sorted(set(range(num_processes)) - {r["rank"] for r in found})
        if silent:  # a killed worker reports nothing; its peers then report lost connections
            after = f"; then {found[0]['error'].splitlines()[0][:200]}" if found else ""
            raise TrainingError(f"training worker rank {', '.join(map(str, silent))} died without "
                                f"reporting an error (killed, or out of memory?){after}") from exc
        # The first error is the cause; the others are usually peers losing their connection.
        cause = found[0]
        others = f" (then {len(found) - 1} other worker(s) failed)" if len(found) > 1 else ""
        raise TrainingError(f"training failed in worker rank {cause['rank']}: {cause['error']}{others}") from exc


def train(spark: SparkSession, cfg: Config, ds: str, *, model: str | None = None,
          resume: bool = False) -> Manifest:
    """Train `model` (default `train.model`) on snapshot `ds`; returns the manifest."""
    name = model or cfg.train.model
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    t = cfg.train
    root = resolve_root(cfg.paths.root)
    m = Manifest("train", ds, to_dict(cfg))
    store = Storage(spark)
    with m.recorded(lambda data: store.write_json(join(root, "runs", ds, "train.json"), data)):
        snap = check_snapshot(root, cfg.dataset, ds, t.num_processes)
        use_gpu = torch.cuda.is_available() if t.use_gpu is None else t.use_gpu
        run_dir = join(models_dir(root, name), "_runs", ds)
        if not resume:
            fsio.delete_dir(run_dir)
        loss = t.loss or DEFAULT_LOSS[name]
        spec = {
            "model": model_spec(cfg, name, snap), "train": dataclasses.asdict(t), "loss": loss,
            "use_gpu": use_gpu, "resume": resume, "run_dir": run_dir,
            "train_url": fsio.url(snap.dataset(S.TRAIN)), "train_rows": snap.rows[S.TRAIN],
            "paths": {k: snap.dataset(k) for k in (S.TRAIN, S.VALID, S.USERS, S.ITEMS)},
        }
        m.data["inputs"] = {"snapshot": snap.path, "rows": snap.rows}
        log.info("training %s on %s with %d %s worker(s), loss %s", name, snap.path,
                 t.num_processes, "GPU" if use_gpu else "CPU", loss)
        with m.timed("train"):
            result = launch(spec, t.num_processes, use_gpu, t.local_mode)
        if result["best_epoch"] < 0:
            raise RuntimeError("training finished without a single evaluated epoch")
        k = result["eval_k"]
        best = result["history"][[h["epoch"] for h in result["history"]].index(result["best_epoch"])]
        metrics = {"model": name, "best_epoch": result["best_epoch"],
                   **{key[len("valid_"):]: v for key, v in best.items() if key.startswith("valid_")},
                   "popularity": {key: v for key, v in result["baseline"].items()},
                   "beats_popularity": result["best_ndcg"] > result["baseline"][f"ndcg@{k}"]}
        version = new_version(ds)
        with m.timed("publish"):
            path = publish(root, name, version, fsio.read_bytes(join(run_dir, "best.pt")), {
                "config": {"model": spec["model"], "loss": loss, "train": spec["train"]},
                "metrics": metrics, "history": {"epochs": result["history"]},
                "data": {"ds": ds, "dataset": cfg.dataset, "snapshot": snap.path,
                         "user_index": snap.dataset(S.USER_INDEX),
                         "item_index": snap.dataset(S.ITEM_INDEX),
                         "rows": snap.rows, "snapshot_time": snap.snapshot_time,
                         "fingerprints": snapshot.id_map_digests(spark, snap)},
            })
        m.data["outputs"] = {"artifact": path, "version": version, "model": name}
        m.data["metrics"] = metrics
        m.data["counts"] = {"epochs": len(result["history"]), "train_rows": snap.rows[S.TRAIN],
                            "samples_per_s": best["samples_per_s"], "workers": result["world"],
                            "device": result["device"]}
    return m
