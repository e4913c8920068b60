"""User and item feature tables from prepare, as tensors for the two-tower model.

Categorical codes feed embeddings, numeric columns are log-scaled and standardised (missing
becomes 0, the mean), multi-hot vectors pass through, list features (genres, title words,
tags: fixed-length vocabulary ids, 0 = padding) feed the content encoders of `content.py`. `history` says which ids have training
interactions: the others have untrained id embeddings, which the model must ignore.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from recsys.snapshot import read_features

# Per-id activity columns prepare writes first (prep/features.py `_activity`).
ACTIVITY = ("n_train", "popularity", "recency_days", "age_days", "mean_value")


@dataclass
class FeatureTable:
    categorical: Tensor  # [n, C] int64 codes, 0 = missing
    cardinalities: list[int]
    numeric: Tensor  # [n, D] float32, standardised
    multi_hot: Tensor  # [n, W] float32
    history: Tensor  # [n] bool
    # The leading numeric columns that describe activity (the count first, then recency, age,
    # mean value): the towers drop all but the count, which is 0 for an id without history,
    # together with the id embedding.
    activity: int = 0
    lists: list[Tensor] = field(default_factory=list)  # each [n, L] int64 ids, 0 = padding
    list_specs: list[dict] = field(default_factory=list)  # each {"name", "kind", "cardinality", "length"}

    @property
    def n(self) -> int:
        return len(self.history)

    def shapes(self) -> dict:
        """What a model needs to be rebuilt before its state dict is loaded."""
        return {"cardinalities": self.cardinalities, "n_numeric": self.numeric.shape[1],
                "width": self.multi_hot.shape[1], "n": self.n, "lists": self.list_specs,
                "activity": self.activity}

    @staticmethod
    def has_content(shapes: dict) -> bool:
        """Whether a table of these `shapes()` says anything of an id beyond its activity
        (counts, recency): what a model needs to place an id without history."""
        return bool(shapes.get("lists") or shapes["cardinalities"] or shapes["width"]
                    or shapes["n_numeric"] > shapes.get("activity", 0))

    @classmethod
    def empty(cls, shapes: dict) -> "FeatureTable":
        n = shapes["n"]
        specs = list(shapes.get("lists", []))
        return cls(torch.zeros(n, len(shapes["cardinalities"]), dtype=torch.long),
                   list(shapes["cardinalities"]), torch.zeros(n, shapes["n_numeric"]),
                   torch.zeros(n, shapes["width"]), torch.zeros(n, dtype=torch.bool), shapes.get("activity", 0),
                   [torch.zeros(n, s["length"], dtype=torch.long) for s in specs], specs)


def load_features(path: str, idx: str, count_column: str) -> FeatureTable:
    """Read `users` or `items` of a snapshot; rows are ordered by the dense id."""
    table, meta = read_features(path, idx)
    cats = list(meta["categorical"])
    categorical = torch.as_tensor(table[cats].to_numpy(dtype=np.int64).reshape(len(table), -1))
    num = table[meta["numeric"]].to_numpy(dtype=np.float64).reshape(len(table), -1)
    num = np.sign(num) * np.log1p(np.abs(num))
    mean, std = np.nanmean(num, axis=0), np.nanstd(num, axis=0)
    num = np.nan_to_num((num - np.nan_to_num(mean)) / np.where(std > 0, std, 1.0))
    hots = [np.stack(table[c].to_numpy()).astype(np.float32) for c in meta["multi_hot"]]
    multi = np.concatenate(hots, axis=1) if hots else np.zeros((len(table), 0), np.float32)
    specs = [{"name": name, **spec} for name, spec in meta.get("lists", {}).items()]
    lists = [torch.as_tensor(np.stack(table[s["name"]].to_numpy()).astype(np.int64)) for s in specs]
    activity = 0
    while activity < len(meta["numeric"]) and meta["numeric"][activity] in ACTIVITY:
        activity += 1
    return FeatureTable(
        activity=activity, lists=lists, list_specs=specs,
        categorical=categorical,
        cardinalities=[int(meta["categorical"][c]["cardinality"]) for c in cats],
        numeric=torch.as_tensor(num, dtype=torch.float32),
        multi_hot=torch.as_tensor(multi),
        history=torch.as_tensor(table[count_column].to_numpy() > 0),
    )
