"""The publish gate: a model replaces the published recommendations only if it is good enough.

Two checks on one metric (`score.gate.metric`, default NDCG@10), each against numbers measured
the same way:
- against popularity, on the same validation split in the same run: the evaluate job's report
  for this ds and model version if there is one, else the validation metrics training saved;
- against the model behind the newest published partition: its own validation metric, which
  the new one may undercut by at most `max_drop_from_published` (relative).

And, when configured, two bounds on exposure (`ranking/exposure.py`) at the K of that metric,
against the published model's numbers: catalogue coverage may fall by at most
`max_coverage_drop` (relative), the exposure Gini rise by at most `max_gini_increase`
(absolute). Each model's numbers come from the evaluate report of the ds it was trained on,
which keeps them per model version (`beyond_accuracy_by_version`); a published model without
them (never evaluated) leaves the bounds unchecked, a candidate without them fails the gate.

The evaluate step reports the verdict and the score step enforces it, so it sits beside both
stages rather than inside either.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from recsys import fsio
from recsys.artifacts import Artifact, models_dir
from recsys.config import MODELS, GateConfig, metric_k
from recsys.errors import RecsysError
from recsys.storage import join


class GateError(RecsysError):
    """The model did not pass the publish gate; nothing was published."""


@dataclass
class Verdict:
    passed: bool
    message: str
    numbers: dict[str, Any] = field(default_factory=dict)


def decide(gate: GateConfig, model: float, popularity: float, published: float | None) -> Verdict:
    """The rule itself, on plain numbers (tests call this directly)."""
    m = gate.metric
    numbers = {"metric": m, "model": model, "popularity": popularity, "published_model": published}
    need = popularity * (1.0 + gate.min_lift_over_popularity)
    if not model > need:
        return Verdict(False, f"model {m} {model:.4f} does not beat popularity {popularity:.4f} "
                              f"by the required margin of {gate.min_lift_over_popularity:.0%}", numbers)
    if published is not None:
        floor = published * (1.0 - gate.max_drop_from_published)
        if model < floor:
            return Verdict(False, f"model {m} {model:.4f} is more than "
                                  f"{gate.max_drop_from_published:.0%} below the published model's "
                                  f"{published:.4f}", numbers)
    tail = f", published model {published:.4f}" if published is not None else ""
    return Verdict(True, f"model {m} {model:.4f} vs popularity {popularity:.4f}{tail}", numbers)


BOUNDS = ("max_coverage_drop", "max_gini_increase")


def exposure_bounded(gate: GateConfig) -> bool:
    return any(getattr(gate, key) is not None for key in BOUNDS)


def decide_exposure(gate: GateConfig, model: dict[str, Any] | None,
                    published: dict[str, Any] | None) -> Verdict:
    """The exposure bounds on plain numbers: `model` and `published` are beyond-accuracy dicts
    (`coverage@K`, `gini@K`, ...) or None where unknown (tests call this directly)."""
    k = metric_k(gate.metric)
    cov, gini = f"coverage@{k}", f"gini@{k}"
    bounds = {key: getattr(gate, key) for key in BOUNDS if getattr(gate, key) is not None}
    numbers = {"bounds": bounds, "model": {key: (model or {}).get(key) for key in (cov, gini)},
               "published_model": None if published is None else {key: published.get(key) for key in (cov, gini)}}
    named = " and ".join(f"score.gate.{key} {value:g}" for key, value in bounds.items())
    needed = [cov] * ("max_coverage_drop" in bounds) + [gini] * ("max_gini_increase" in bounds)
    if model is None or any(model.get(key) is None for key in needed):
        return Verdict(False, f"{named} set, and the model has no {' / '.join(needed)} from the "
                              f"evaluate job: run evaluate for the ds it was trained on", numbers)
    checked = []
    bound = gate.max_coverage_drop
    if bound is not None and published is not None and published.get(cov) is not None:
        floor = published[cov] * (1.0 - bound)
        if model[cov] < floor:
            return Verdict(False, f"model {cov} {model[cov]:.4f} is more than {100 * bound:g}% below the "
                                  f"published model's {published[cov]:.4f} (score.gate.max_coverage_drop "
                                  f"{bound:g})", numbers)
        checked.append(f"{cov} {model[cov]:.4f} vs published {published[cov]:.4f}")
    bound = gate.max_gini_increase
    if bound is not None and published is not None and published.get(gini) is not None:
        if model[gini] > published[gini] + bound:
            return Verdict(False, f"model {gini} {model[gini]:.4f} is more than {bound:g} above the "
                                  f"published model's {published[gini]:.4f} (score.gate.max_gini_increase "
                                  f"{bound:g})", numbers)
        checked.append(f"{gini} {model[gini]:.4f} vs published {published[gini]:.4f}")
    if not checked:
        return Verdict(True, f"{named} not checked: no published model's exposure numbers", numbers)
    return Verdict(True, ", ".join(checked), numbers)


def both(accuracy: Verdict, exposure: Verdict) -> Verdict:
    """One verdict: the accuracy check's, then the exposure bounds' (the first failure speaks)."""
    passed = accuracy.passed and exposure.passed
    message = (accuracy.message if not accuracy.passed else exposure.message if not exposure.passed
               else f"{accuracy.message}; {exposure.message}")
    return Verdict(passed, message, {**accuracy.numbers, "exposure": exposure.numbers})


def evaluation_numbers(root: str, ds: str, artifact: Artifact, metric: str) -> tuple[float, float, str]:
    """(model, popularity, where from) for `artifact` on snapshot `ds`."""
    report = join(root, "reports", ds, "evaluate.json")
    if fsio.exists(report):
        data = json.loads(fsio.read_bytes(report))
        if data.get("model", {}).get("version") == artifact.version:
            return (data["model"]["metrics"][metric],
                    data["baselines"]["popularity"]["metrics"][metric], report)
    metrics = artifact.metrics
    if metric not in metrics or metric not in metrics.get("popularity", {}):
        raise GateError(f"no {metric} for model {artifact.version} and the popularity baseline: "
                        f"run evaluate for ds={ds} (or train with train.eval_k matching), or --force")
    return metrics[metric], metrics["popularity"][metric], join(artifact.path, "metrics.json")


def _artifact_doc(root: str, version: str | None, doc: str) -> dict[str, Any] | None:
    """`<doc>.json` of the artifact `version` (of whichever model), if there is one."""
    if version is None:
        return None
    for name in (*MODELS, "blend"):
        path = join(models_dir(root, name), version, f"{doc}.json")
        if fsio.exists(path):
            return json.loads(fsio.read_bytes(path))
    return None


def published_metric(root: str, version: str | None, metric: str) -> float | None:
    """The validation metric of the model behind the published partition, if it is known."""
    metrics = _artifact_doc(root, version, "metrics")
    return None if metrics is None else metrics.get(metric)


def evaluated_exposure(root: str, version: str | None) -> dict[str, Any] | None:
    """The beyond-accuracy numbers the evaluate job measured for model `version`, from the
    report of the ds it was trained on (evaluate runs on that snapshot only), if it ran."""
    data = _artifact_doc(root, version, "data")
    if data is None:
        return None
    report = join(root, "reports", data["ds"], "evaluate.json")
    if not fsio.exists(report):
        return None
    return json.loads(fsio.read_bytes(report)).get("beyond_accuracy_by_version", {}).get(version)


def check(root: str, ds: str, gate: GateConfig, artifact: Artifact,
          published_version: str | None) -> Verdict:
    model, popularity, source = evaluation_numbers(root, ds, artifact, gate.metric)
    same = published_version == artifact.version
    published = None if same else published_metric(root, published_version, gate.metric)
    verdict = decide(gate, model, popularity, published)
    verdict.numbers.update(source=source, published_version=published_version)
    if exposure_bounded(gate):
        exposure = decide_exposure(gate, evaluated_exposure(root, artifact.version),
                                   None if same else evaluated_exposure(root, published_version))
        verdict = both(verdict, exposure)
    return verdict
