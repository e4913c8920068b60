"""The evaluate step: the trained model against popularity, ALS and EASE, on one split, one report.

All of them are scored by one `Evaluator` (same users, same seen-item exclusion, same metrics),
the model with the weights the validation rows were held out from (a refit model's `fit.pt`),
and the results go to `<root>/reports/<ds>/` (index.html, PNG plots, evaluate.json) and to the
manifest `<root>/runs/<ds>/evaluate.json`.

Beside the accuracy metrics, each gets the beyond-accuracy numbers of its lists
(`ranking/exposure.py`), and the published model's, as its own evaluation measured them, sit
beside them. evaluate.json keeps every version's numbers evaluated on this ds
(`beyond_accuracy_by_version`), where the gate finds them.
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
from recsys.errors import MissingColumnError, SnapshotError
from recsys.evaluation import baselines
from recsys.evaluation.report import write_report
from recsys.faults import maybe_fail
from recsys.manifest import Manifest
from recsys.ranking import exposure
from recsys.ranking.evaluator import Csr, Evaluator, popularity
from recsys.models import history_length, ranker
from recsys.snapshot import check_id_maps, read_features, read_histories, read_pairs, snapshot_path
from recsys.storage import Storage, join, resolve_root

log = logging.getLogger("recsys.evaluate")


def _timed(name: str, fn, evaluator: Evaluator, counts: np.ndarray, **kw) -> dict[str, Any]:
    t = time.perf_counter()
    metrics = evaluator.evaluate(fn, **kw)
    beyond = {key: value for k in evaluator.ks for key, value in exposure.summary(
        evaluator.exposure[k], counts, k, evaluator.diversity.get(k)).items()}
    k = evaluator.ks[0]
    log.info("%s: ndcg@%d %.4f, exposure gini@%d %s (%.1fs)", name, k, metrics[f"ndcg@{k}"], k,
             beyond[f"gini@{k}"], time.perf_counter() - t)
    return {"metrics": metrics, "beyond_accuracy": beyond, "seconds": round(time.perf_counter() - t, 3)}


def item_categories(path: str, column: str, key: str) -> np.ndarray:
    """[n_items, M] category codes (0: none) from a column of the snapshot's items table: a
    categorical one (one code per item), a multi-valued or tag list (vocabulary ids; 1, a value
    too rare for the vocabulary, counts as none), or multi-hot flags."""
    table, meta = read_features(path, S.ITEM_IDX)
    lists = {name for name, spec in meta.get("lists", {}).items() if spec["kind"] == "values"}
    if column in meta["categorical"]:
        return table[column].to_numpy(np.int64)[:, None]
    if column in lists:
        codes = np.stack(table[column].to_numpy()).astype(np.int64)
        return np.where(codes > 1, codes, 0)  # 0 padding, 1 unknown
    if column in meta["multi_hot"]:
        flags = np.stack(table[column].to_numpy())
        return np.where(flags > 0, np.arange(1, flags.shape[1] + 1), 0)
    usable = [*meta["categorical"], *sorted(lists), *meta["multi_hot"]]
    raise MissingColumnError(f"{key} {column!r} is not a categorical, multi-valued or multi-hot "
                             f"column of {path} (those are: {', '.join(usable) or 'none'})")


def _beyond_by_version(out: str, version: str, numbers: dict[str, Any]) -> dict[str, Any]:
    """This ds's evaluate.json keeps the beyond-accuracy numbers of every version evaluated on
    it, so a model evaluated here and then replaced by another can still be compared with."""
    path = join(out, "evaluate.json")
    earlier = json.loads(fsio.read_bytes(path)).get("beyond_accuracy_by_version", {}) if fsio.exists(path) else {}
    return {**earlier, version: numbers}


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
            column, key = ((e.category_column, "evaluate.category_column") if e.category_column
                           else (cfg.score.category_column, "score.category_column"))
            categories = None if column is None else item_categories(join(snap, S.ITEMS), column, key)
            evaluator = Evaluator(valid_users, valid_items, train_users, train_items, n_items,
                                  ks=tuple(e.ks), max_users=e.max_users, seed=cfg.train.seed,
                                  popularity=counts, categories=categories)
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
            results["model"].update(_timed(name, ranker(net, n_items, histories), evaluator, counts,
                                           collect=True))
            top_items, top_scores = evaluator.top_items, evaluator.top_scores
        with m.timed("popularity"):
            results["baselines"]["popularity"] = _timed(
                "popularity", popularity(train_items, n_items), evaluator, counts)
        with m.timed("als"):
            if e.als.enabled:
                als = baselines.als(spark.read.parquet(join(snap, S.TRAIN)), n_users, n_items,
                                    rank=e.als.rank, max_iter=e.als.max_iter, reg=e.als.reg,
                                    alpha=e.als.alpha, seed=cfg.train.seed)
                results["baselines"]["als"] = _timed("als", als, evaluator, counts)
            else:
                results["baselines"]["als"] = {"skipped": "evaluate.als.enabled is false"}
        with m.timed("ease"):
            if n_items <= e.ease_max_items:
                train_csr = Csr(train_users, train_items, n_users)
                results["baselines"]["ease"] = _timed(
                    "ease", baselines.ease(train_csr, n_users, n_items, e.ease_lambda), evaluator, counts)
            else:
                reason = (f"a catalogue of {n_items} items is above evaluate.ease_max_items="
                          f"{e.ease_max_items} (EASE inverts an items x items matrix)")
                log.info("ease skipped: %s", reason)
                results["baselines"]["ease"] = {"skipped": reason}
        s = cfg.score
        published_version = warehouse.published_version(spark, s.table)
        same = published_version == artifact.version
        published_beyond = None if same else gate.evaluated_exposure(root, published_version)
        if published_beyond is not None:
            results["published"] = {"version": published_version, "beyond_accuracy": published_beyond}
        if s.gate.enabled:
            metric = s.gate.metric
            if metric in results["model"]["metrics"]:
                published = gate.published_metric(root, published_version, metric)
                verdict = gate.decide(s.gate, results["model"]["metrics"][metric],
                                      results["baselines"]["popularity"]["metrics"][metric], published)
                if gate.exposure_bounded(s.gate):
                    verdict = gate.both(verdict, gate.decide_exposure(
                        s.gate, results["model"]["beyond_accuracy"], published_beyond))
                results["gate"] = {"passed": verdict.passed, "message": verdict.message}
        selection = read_selection(root, ds)
        if selection is not None and selection["winner"]["version"] == artifact.version:
            results["leaderboard"] = selection["leaderboard"]
            m.data["leaderboard"] = selection["leaderboard"]
        with m.timed("report"):
            history = json.loads(fsio.read_bytes(join(artifact.path, "history.json")))["epochs"]
            k = e.ks[0]
            out = join(root, "reports", ds)
            results["beyond_accuracy_by_version"] = _beyond_by_version(
                out, artifact.version, results["model"]["beyond_accuracy"])
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
        columns = {"model": results["model"], **results["baselines"]}
        if "published" in results:
            columns["published_model"] = results["published"]
        m.data["beyond_accuracy"] = {  # the scalars; the deciles are in evaluate.json
            name: {key: v for key, v in r["beyond_accuracy"].items() if not isinstance(v, list)}
            for name, r in columns.items() if "beyond_accuracy" in r}
        m.data["counts"] = {"users_evaluated": results["model"]["metrics"]["users"],
                            "items": n_items}
    return m

