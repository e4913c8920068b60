"""The evaluate step: the trained model against popularity, ALS and EASE, on one split, one report.

All of them are scored by one `Evaluator` (same users, same seen-item exclusion, same metrics),
the model with the weights the validation rows were held out from (a refit model's `fit.pt`),
and the results go to `<root>/reports/<ds>/` (index.html, PNG plots, evaluate.json) and to the
manifest `<root>/runs/<ds>/evaluate.json`.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any

import numpy as np
from pyspark.sql import SparkSession

from recsys import fsio, gate, warehouse
from recsys import schema as S
from recsys.artifacts import load_artifact, read_selection, resolve_model
from recsys.config import Config, to_dict
from recsys.errors import SnapshotError
from recsys.evaluation import baselines
from recsys.evaluation.report import write_report
from recsys.faults import maybe_fail
from recsys.manifest import Manifest
from recsys.ranking.evaluator import Csr, Evaluator, popularity
from recsys.models import history_length, ranker
from recsys.snapshot import check_id_maps, read_histories, read_pairs, snapshot_path
from recsys.storage import Storage, join, resolve_root

log = logging.getLogger("recsys.evaluate")


def _timed(name: str, fn, evaluator: Evaluator, **kw) -> dict[str, Any]:
    t = time.perf_counter()
    metrics = evaluator.evaluate(fn, **kw)
    log.info("%s: ndcg@%d %.4f (%.1fs)", name, evaluator.ks[0], metrics[f"ndcg@{evaluator.ks[0]}"],
             time.perf_counter() - t)
    return {"metrics": metrics, "seconds": round(time.perf_counter() - t, 3)}


def evaluate(spark: SparkSession, cfg: Config, ds: str, *, model: str | None = None) -> Manifest:
    """Evaluate `model` (default: score.model, train.model, else the night's selection; its
    artifact trained on snapshot `ds`) and write the report, the leaderboard included."""
    e = cfg.evaluate
    root = resolve_root(cfg.paths.root)
    m = Manifest("evaluate", ds, to_dict(cfg))
    with m.recorded(lambda data: Storage(spark).write_json(join(root, "runs", ds, "evaluate.json"), data)):
        name, version = resolve_model(root, model or cfg.score.model or cfg.train.model)
        artifact = load_artifact(root, name, version)
        snap = snapshot_path(root, cfg.dataset, ds)
        if artifact.data["ds"] != ds or artifact.data["snapshot"] != snap:
            raise SnapshotError(f"the latest {name} model ({artifact.version}) was trained on "
                                f"ds={artifact.data['ds']}, not ds={ds}: ids differ between "
                                f"snapshots, so train on ds={ds} first")
        check_id_maps(spark, artifact.data, artifact.version)
        maybe_fail("evaluate")
        m.data["inputs"] = {"model": name, "version": artifact.version, "snapshot": snap}
        n_users = artifact.config["model"]["n_users"]
        n_items = artifact.config["model"]["n_items"]
        with m.timed("load"):
            train_users, train_items = read_pairs(join(snap, S.TRAIN))
            valid_users, valid_items = read_pairs(join(snap, S.VALID))
            counts = np.bincount(train_items, minlength=n_items)
            evaluator = Evaluator(valid_users, valid_items, train_users, train_items, n_items,
                                  ks=tuple(e.ks), max_users=e.max_users, seed=cfg.train.seed,
                                  popularity=counts)
        results: dict[str, Any] = {"model": {"name": name, "version": artifact.version},
                                   "baselines": {}, "ds": ds}
        with m.timed("model"):
            # The weights the validation rows were held out from: a refit model has trained on
            # them, and measuring it there would flatter it (and the gate that reads this).
            net = artifact.load_model(fit=True)
            histories = None
            if net.reads_history:  # validation users from their training history, as in training
                histories = read_histories(join(snap, S.HISTORIES), history_length(artifact.config["model"]),
                                           include_valid=False, users=evaluator.users)
            results["model"].update(_timed(name, ranker(net, n_items, histories), evaluator,
                                           collect=True))
            top_items, top_scores = evaluator.top_items, evaluator.top_scores
        with m.timed("popularity"):
            results["baselines"]["popularity"] = _timed(
                "popularity", popularity(train_items, n_items), evaluator)
        with m.timed("als"):
            if e.als.enabled:
                als = baselines.als(spark.read.parquet(join(snap, S.TRAIN)), n_users, n_items,
                                    rank=e.als.rank, max_iter=e.als.max_iter, reg=e.als.reg,
                                    alpha=e.als.alpha, seed=cfg.train.seed)
                results["baselines"]["als"] = _timed("als", als, evaluator)
            else:
                results["baselines"]["als"] = {"skipped": "evaluate.als.enabled is false"}
        with m.timed("ease"):
            if n_items <= e.ease_max_items:
                train_csr = Csr(train_users, train_items, n_users)
                results["baselines"]["ease"] = _timed(
                    "ease", baselines.ease(train_csr, n_users, n_items, e.ease_lambda), evaluator)
            else:
                reason = (f"a catalogue of {n_items} items is above evaluate.ease_max_items="
                          f"{e.ease_max_items} (EASE inverts an items x items matrix)")
                log.info("ease skipped: %s", reason)
                results["baselines"]["ease"] = {"skipped": reason}
        s = cfg.score
        if s.gate.enabled:
            metric = s.gate.metric
            if metric in results["model"]["metrics"]:
                published = gate.published_metric(
                    root, warehouse.published_version(spark, s.table), metric)
                verdict = gate.decide(s.gate, results["model"]["metrics"][metric],
                                      results["baselines"]["popularity"]["metrics"][metric], published)
                results["gate"] = {"passed": verdict.passed, "message": verdict.message}
        selection = read_selection(root, ds)
        if selection is not None and selection["winner"]["version"] == artifact.version:
            results["leaderboard"] = selection["leaderboard"]
            m.data["leaderboard"] = selection["leaderboard"]
        with m.timed("report"):
            history = json.loads(fsio.read_bytes(join(artifact.path, "history.json")))["epochs"]
            k = e.ks[0]
            out = join(root, "reports", ds)
            files = write_report(out, ds, results, history,
                                 score_sample=top_scores[:, :k].ravel(),
                                 recommended_popularity=counts[top_items[:, :k].ravel()],
                                 catalogue_popularity=counts)
            fsio.write_bytes(join(out, "evaluate.json"),
                             json.dumps(results, indent=2, sort_keys=True, default=float).encode())
        m.data["outputs"] = {"report": join(out, "index.html"), "evaluation": join(out, "evaluate.json"),
                             "files": files}
        m.data["metrics"] = {"model": results["model"]["metrics"],
                             **{b: r.get("metrics", r) for b, r in results["baselines"].items()}}
        m.data["counts"] = {"users_evaluated": results["model"]["metrics"]["users"],
                            "items": n_items}
    return m

