"""Models by name: `build_model(name, spec)` for training, `load_model` for what was saved."""
from __future__ import annotations

from typing import Any

from recsys.models.base import Recommender
from recsys.models.features import FeatureTable
from recsys.models.mf import MatrixFactorization
from recsys.models.neumf import NeuMF
from recsys.models.two_tower import TwoTower

DEFAULT_LOSS = {"mf": "bpr", "neumf": "bce", "two_tower": "softmax"}


def build_model(spec: dict[str, Any], users: FeatureTable | None = None,
                items: FeatureTable | None = None) -> Recommender:
    """`spec` is the model section of an artifact's config: name, sizes and hyper-parameters."""
    name = spec["model"]
    if name == "mf":
        return MatrixFactorization(spec["n_users"], spec["n_items"], spec["dim"])
    if name == "neumf":
        return NeuMF(spec["n_users"], spec["n_items"], spec["dim"], spec["hidden"], spec["dropout"])
    if name == "two_tower":
        users = users or FeatureTable.empty(spec["user_features"])
        items = items or FeatureTable.empty(spec["item_features"])
        return TwoTower(users, items, spec["dim"], spec["hidden"], spec["dropout"],
                        spec["id_dropout"], spec["temperature"])
    raise ValueError(f"unknown model {name!r}; known: {', '.join(DEFAULT_LOSS)}")


__all__ = ["Recommender", "build_model", "DEFAULT_LOSS", "FeatureTable"]
