"""Model artifacts: `<root>/models/<model>/<version>/` and the `latest` pointer beside them.

An artifact holds `model.pt` (a state dict: tensors only, loaded with `weights_only=True`;
with a refit, `fit.pt` beside it holds the weights the validation numbers belong to),
`config.json` (how to rebuild the model), `metrics.json`, `history.json` and `data.json` (the
snapshot it was trained on and its id maps). It is assembled in a staging directory and moved
into place; `latest` is rewritten only after that, so scoring never loads a partial model.
"""
from __future__ import annotations

import io
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import torch

from recsys import fsio
from recsys.errors import MissingInputError
from recsys.models import Recommender, build_model
from recsys.storage import join

WEIGHTS = "model.pt"
FIT_WEIGHTS = "fit.pt"  # with a refit: the weights validation measured (blends are chosen on them)
LATEST = "latest"
COMPLETE = "_COMPLETE"


def models_dir(root: str, model: str) -> str:
    return join(root, "models", model)


def new_version(ds: str) -> str:
    """Sortable and unique: the snapshot date, then the UTC time of training."""
    return f"{ds}_{datetime.now(timezone.utc):%Y%m%dT%H%M%S}_{uuid.uuid4().hex[:4]}"


def publish(root: str, model: str, version: str, weights: bytes, docs: dict[str, Any],
            fit_weights: bytes | None = None) -> str:
    """Write an artifact atomically, then point `latest` at it. Returns its path."""
    base = models_dir(root, model)
    final = join(base, version)
    if fsio.exists(final):
        raise FileExistsError(f"model artifact {final} exists already; versions are never rewritten")
    staging = join(base, "_staging", version)
    fsio.delete_dir(staging)
    fsio.write_bytes(join(staging, WEIGHTS), weights)
    if fit_weights is not None:
        fsio.write_bytes(join(staging, FIT_WEIGHTS), fit_weights)
    for name, doc in docs.items():
        fsio.write_bytes(join(staging, f"{name}.json"),
                         json.dumps(doc, indent=2, sort_keys=True, default=str).encode())
    fsio.write_bytes(join(staging, COMPLETE), version.encode())
    fsio.move(staging, final)
    fsio.write_bytes(join(base, LATEST), version.encode())
    return final


@dataclass
class Artifact:
    path: str
    version: str
    config: dict[str, Any]
    data: dict[str, Any]
    metrics: dict[str, Any]

    def load_model(self, fit: bool = False) -> Recommender:
        """The published weights, or (`fit`) those the validation metrics were measured on."""
        model = build_model(self.config["model"])
        name = FIT_WEIGHTS if fit and fsio.exists(join(self.path, FIT_WEIGHTS)) else WEIGHTS
        state = torch.load(io.BytesIO(fsio.read_bytes(join(self.path, name))),
                           weights_only=True, map_location="cpu")
        model.load_state_dict(state)
        return model.eval()


def versions(root: str, model: str) -> list[str]:
    base = models_dir(root, model)
    return [v for v in fsio.listdir(base)
            if not v.startswith(("_", ".")) and v != LATEST and fsio.exists(join(base, v, COMPLETE))]


def load_artifact(root: str, model: str, version: str | None = None) -> Artifact:
    """The named version, or the one `latest` points to; a clear error if there is none."""
    base = models_dir(root, model)
    if version is None:
        if not fsio.exists(join(base, LATEST)):
            raise MissingInputError(f"no trained {model!r} model under {base}: run train first")
        version = fsio.read_bytes(join(base, LATEST)).decode().strip()
    path = join(base, version)
    if not fsio.exists(join(path, COMPLETE)):
        known = ", ".join(versions(root, model)) or "none"
        raise MissingInputError(f"model {model!r} version {version!r} not found under {base} "
                                f"(available: {known})")

    def doc(name: str) -> dict[str, Any]:
        return json.loads(fsio.read_bytes(join(path, f"{name}.json")))

    return Artifact(path, version, doc("config"), doc("data"), doc("metrics"))


# --- the night's choice among candidates (train.model unset) ------------------------------------

SELECTION = "_selection"


def write_selection(root: str, ds: str, record: dict[str, Any]) -> str:
    """Record which model (or blend) won on `ds`; `latest` points at it once it is complete."""
    base = join(root, "models", SELECTION)
    path = join(base, f"{ds}.json")
    fsio.write_bytes(path, json.dumps(record, indent=2, sort_keys=True, default=str).encode())
    fsio.write_bytes(join(base, LATEST), ds.encode())
    return path


def read_selection(root: str, ds: str | None = None) -> dict[str, Any] | None:
    """The selection of `ds`, or the newest one; None if there is none."""
    base = join(root, "models", SELECTION)
    if ds is None:
        if not fsio.exists(join(base, LATEST)):
            return None
        ds = fsio.read_bytes(join(base, LATEST)).decode().strip()
    path = join(base, f"{ds}.json")
    return json.loads(fsio.read_bytes(path)) if fsio.exists(path) else None


def resolve_model(root: str, name: str | None) -> tuple[str, str | None]:
    """(model, version) to evaluate or score: a named model's latest version, else the newest
    selection's winner."""
    if name is not None:
        return name, None
    record = read_selection(root)
    if record is None:
        raise MissingInputError(f"no model is named (train.model, score.model) and none has been "
                                f"selected under {join(root, 'models', SELECTION)}: run train first")
    return record["winner"]["model"], record["winner"]["version"]
