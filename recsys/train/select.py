"""The night's model when none is named: candidates side by side on validation, and blends.

No model family wins on every log. With `train.model` unset, the train step trains each model
of `train.candidates` on the same snapshot (as `recsys train --model M` would, refit included),
measures each one's first-fit weights on the same validation users with the same evaluator
(the metric the gate uses, with standard errors), then linear blends (per-user standardised
scores, weights from a small grid, also measured on validation): each of the best
`train.blend_members` candidates with every weaker one, and mixes of the best three; it
publishes the best of all as the selection, unless the model published before (measured
again among them) is within `train.switch_se` paired standard errors of it: then that one
stays. Only validation rows choose. Every `train.select_every` days the whole bake-off runs;
on the nights between only the winner (or the blend's members) is retrained and the blend
keeps its weights.

A candidate that cannot run on this snapshot (EASE above its catalogue limit, a history model
on a snapshot without histories) is recorded in the leaderboard with the reason, not dropped.
"""
from __future__ import annotations

import io
import logging
import time
from datetime import date
from typing import Any, Callable

import numpy as np
import torch

from recsys import fsio
from recsys.artifacts import (FIT_WEIGHTS, WEIGHTS, Artifact, load_artifact, new_version, publish,
                              read_selection, write_selection)
from recsys.config import Config
from recsys.errors import ConfigError, RecsysError, SnapshotError
from recsys.models import build_model, history_length, reads_history
from recsys.ranking.evaluator import standard_error
from recsys.snapshot import Snapshot
from recsys.storage import join, resolve_root
from recsys.train.validation import Validation

log = logging.getLogger("recsys.train")
BLEND = "blend"
TRIPLES = ((0.5, 0.25, 0.25), (0.25, 0.5, 0.25), (0.25, 0.25, 0.5), (1 / 3, 1 / 3, 1 / 3))


def bakeoff_due(previous: dict[str, Any] | None, ds: str, cfg: Config) -> bool:
    """A bake-off runs on the first night, every `select_every` days, when the candidate list
    changed, and again when the night of the last bake-off is re-run."""
    if previous is None or previous["candidates"] != list(cfg.train.candidates):
        return True
    if previous["bakeoff_ds"] == ds:
        return True
    days = (date.fromisoformat(ds) - date.fromisoformat(previous["bakeoff_ds"])).days
    return days >= cfg.train.select_every or days < 0


def blend_name(names: list[str], weights: list[float]) -> str:
    return "+".join(f"{w:.2f}x{n}" for n, w in zip(names, weights))


def blend_plans(ranked: list[str], members: int, weights: list[float]) -> list[tuple[list[str], list[float]]]:
    """The blends a bake-off measures, from the candidates best first: each of the best `members`
    with every weaker candidate, at each weight of the stronger one (a weaker model of another
    family often complements a strong one best, and which strong one is not known until
    measured), then mixes of the best three."""
    if members < 2:
        return []
    top = ranked[:members]
    plans = [([a, b], [w, 1 - w]) for i, a in enumerate(top) for b in ranked[i + 1:] for w in weights]
    if len(top) >= 3:
        plans += [(top[:3], list(w)) for w in TRIPLES]
    return plans


def select_model(spark, cfg: Config, ds: str, train_one: Callable[[str], dict[str, Any]],
                 check: Callable[[], Snapshot]) -> dict[str, Any]:
    """Train the candidates (`train_one(name)` publishes one artifact), choose, record.

    `check()` refuses a snapshot no candidate could use (missing, empty, mis-shaped) before
    any is trained; after it, a candidate's own refusal (ConfigError, SnapshotError) is a skip.
    """
    t = cfg.train
    root = resolve_root(cfg.paths.root)
    snap = check()
    previous = read_selection(root)
    due = bakeoff_due(previous, ds, cfg)
    names = list(t.candidates) if due else list(previous["winner"]["members"])
    leaderboard: list[dict[str, Any]] = []
    trained: dict[str, Artifact] = {}
    for name in names:
        t0 = time.perf_counter()
        try:
            result = train_one(name)
        except (ConfigError, SnapshotError) as exc:  # refused before training: it cannot serve this snapshot
            log.warning("candidate %s skipped: %s", name, exc)
            leaderboard.append({"name": name, "model": name, "skipped": str(exc)})
            continue
        trained[name] = load_artifact(root, name, result["outputs"]["version"])
        leaderboard.append({"name": name, "model": name, "version": trained[name].version,
                            "train_s": round(time.perf_counter() - t0, 1)})
    if not trained:
        raise RecsysError(f"no candidate of train.candidates ({', '.join(names)}) could be trained "
                          f"on ds={ds}: {'; '.join(r['skipped'] for r in leaderboard)}")

    specs = [a.config["model"] for a in trained.values()]
    max_len = max((history_length(s) or 1 for s in specs), default=1)
    n_items = specs[0]["n_items"]
    validation = Validation({k: snap.dataset(k) for k in ("train", "valid", "histories")}, n_items, t,
                            any(reads_history(s) for s in specs), max_len=max_len)
    fit_models = {name: a.load_model(fit=True) for name, a in trained.items()}
    metric = f"ndcg@{t.eval_k}"
    per_user: dict[str, np.ndarray] = {}  # each measured row's metric per validation user

    def measure(row: dict[str, Any], model) -> None:
        row.update(_measured(validation, model, t.eval_k))
        per_user[row["name"]] = validation.evaluator.per_user[metric]

    for row in leaderboard:
        if row["model"] in fit_models:
            measure(row, fit_models[row["model"]])

    blends: list[tuple[list[str], list[float]]] = []
    incumbent = None if previous is None else winner_name(previous["winner"])
    if due:
        ranked = [r["model"] for r in sorted((r for r in leaderboard if "skipped" not in r),
                                             key=lambda r: -r[metric])]
        blends = blend_plans(ranked, t.blend_members, t.blend_weights)
    if (previous is not None and previous["winner"]["model"] == BLEND
            and set(previous["winner"]["members"]) <= set(trained)
            and incumbent not in {blend_name(m, w) for m, w in blends}):
        blends.append((list(previous["winner"]["members"]), list(previous["winner"]["weights"])))
    for members, weights in blends:
        model = build_model({"model": BLEND, "members": [trained[n].config["model"] for n in members],
                             "weights": weights})
        for i, name in enumerate(members):
            model.members[i].load_state_dict(fit_models[name].state_dict())
        row = {"name": blend_name(members, weights), "model": BLEND, "members": members, "weights": weights}
        measure(row, model)
        leaderboard.append(row)
        log.info("blend %s: %s %.4f", row["name"], metric, row[metric])

    best = max((r for r in leaderboard if "skipped" not in r), key=lambda r: r[metric])
    kept = None
    if due and incumbent in per_user and best["name"] != incumbent:
        kept = switch_check(per_user[best["name"]], per_user[incumbent], t.switch_se)
        kept.update(challenger=best["name"], incumbent=incumbent)
        if kept["kept"]:
            log.info("keeping %s: %s beats it on validation by %+.4f ± %.4f, less than "
                     "train.switch_se=%g standard errors", incumbent, best["name"], kept["gain"],
                     kept["se"], t.switch_se)
            best = next(r for r in leaderboard if r["name"] == incumbent)
    if best["model"] == BLEND:
        artifact = publish_blend(root, ds, [trained[n] for n in best["members"]], best["weights"],
                                 {k: v for k, v in best.items() if "@" in k or k == "users"},
                                 validation.baseline)
        winner = {"model": BLEND, "version": artifact.version, "members": best["members"],
                  "weights": best["weights"]}
    else:
        artifact = trained[best["model"]]
        winner = {"model": best["model"], "version": artifact.version, "members": [best["model"]],
                  "weights": [1.0]}
    for row in leaderboard:
        row["winner"] = row is best
    record = {"ds": ds, "bakeoff": due, "bakeoff_ds": ds if due else previous["bakeoff_ds"],
              "candidates": list(t.candidates), "metric": metric, "winner": winner,
              "leaderboard": leaderboard, "snapshot": snap.path, "switch": kept}
    path = write_selection(root, ds, record)
    log.info("selected %s (%s %.4f) among %d candidates and blends", best["name"], metric, best[metric],
             len(leaderboard))
    return {"winner": {**winner, "artifact": artifact.path, "metrics": artifact.metrics},
            "leaderboard": leaderboard, "bakeoff": due, "trained": sorted(trained), "path": path,
            "snapshot": snap.path}


def winner_name(winner: dict[str, Any]) -> str:
    """The leaderboard name of a selection's winner (a model, or a blend of its members)."""
    return blend_name(winner["members"], winner["weights"]) if winner["model"] == BLEND else winner["model"]


def switch_check(challenger: np.ndarray, incumbent: np.ndarray, switch_se: float) -> dict[str, Any]:
    """Whether the bake-off keeps the incumbent: unless the challenger's per-user gain on the
    same validation users exceeds `switch_se` paired standard errors. Blends a hair apart
    trade places from one week's validation rows to the next; without this the published
    table would follow that noise."""
    diff = challenger - incumbent
    gain, se = float(diff.mean()) if len(diff) else 0.0, standard_error(diff)
    return {"kept": bool(gain <= switch_se * se), "gain": round(gain, 6), "se": round(se, 6),
            "switch_se": switch_se}


def _measured(validation: Validation, model, k: int) -> dict[str, Any]:
    metrics, se = validation.evaluate(model, with_se=True)
    keep = [f"ndcg@{k}", f"recall@{k}", f"hit_rate@{k}", f"coverage@{k}"]
    return {**{key: metrics[key] for key in keep}, **{f"{key}_se": se[key] for key in keep if key in se},
            "users": metrics["users"]}


def _state(artifact: Artifact, name: str) -> dict[str, torch.Tensor]:
    path = join(artifact.path, name if fsio.exists(join(artifact.path, name)) else WEIGHTS)
    return torch.load(io.BytesIO(fsio.read_bytes(path)), weights_only=True, map_location="cpu")


def publish_blend(root: str, ds: str, members: list[Artifact], weights: list[float],
                  metrics: dict[str, Any], baseline: dict[str, Any]) -> Artifact:
    """A blend artifact like any other: its members' published (refit) weights in one state
    dict, the fit weights beside them, the validation metrics of the blend."""
    spec = {"model": BLEND, "n_users": members[0].config["model"]["n_users"],
            "n_items": members[0].config["model"]["n_items"],
            "members": [a.config["model"] for a in members], "weights": weights}
    names = [a.config["model"]["model"] for a in members]

    def combined(which: str) -> bytes:
        state = {f"members.{i}.{k}": v for i, a in enumerate(members) for k, v in _state(a, which).items()}
        state["weights"] = torch.tensor(weights, dtype=torch.float32)
        buf = io.BytesIO()
        torch.save(state, buf)
        return buf.getvalue()

    version = f"{new_version(ds)}_{'+'.join(names)}"  # the version says what it blends
    publish(root, BLEND, version, combined(WEIGHTS), {
        "config": {"model": spec, "members": [{"model": n, "version": a.version} for n, a in zip(names, members)],
                   "weights": weights},
        "metrics": {"model": BLEND, **metrics, "popularity": baseline,
                    "beats_popularity": all(metrics[k] > baseline[k] for k in metrics
                                            if k.startswith("ndcg@") and not k.endswith("_se"))},
        "history": {"epochs": []},
        "data": members[0].data,
    }, fit_weights=combined(FIT_WEIGHTS))
    return load_artifact(root, BLEND, version)
