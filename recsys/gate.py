"""The publish gate: a model replaces the published recommendations only if it is good enough.

Two checks on one metric (`score.gate.metric`, default NDCG@10), each against numbers measured
the same way:
- against popularity, on the same validation split in the same run: the evaluate job's report
  for this ds and model version if there is one, else the validation metrics training saved;
- against the model behind the newest published partition: its own validation metric, which
  the new one may undercut by at most `max_drop_from_published` (relative).

The evaluate step reports the verdict and the score step enforces it, so it sits beside both
stages rather than inside either.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from recsys import fsio
from recsys.artifacts import Artifact, models_dir
from recsys.config import MODELS, GateConfig
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


def published_metric(root: str, version: str | None, metric: str) -> float | None:
    """The validation metric of the model behind the published partition, if it is known."""
    if version is None:
        return None
    for name in (*MODELS, "blend"):
        path = join(models_dir(root, name), version, "metrics.json")
        if fsio.exists(path):
            return json.loads(fsio.read_bytes(path)).get(metric)
    return None


def check(root: str, ds: str, gate: GateConfig, artifact: Artifact,
          published_version: str | None) -> Verdict:
    model, popularity, source = evaluation_numbers(root, ds, artifact, gate.metric)
    same = published_version == artifact.version
    published = None if same else published_metric(root, published_version, gate.metric)
    verdict = decide(gate, model, popularity, published)
    verdict.numbers.update(source=source, published_version=published_version)
    return verdict
