"""Models by name: `build_model(spec)` rebuilds one from the model section of an artifact's config."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from recsys.models.autoencoders import EASE, MultVAE
from recsys.models.base import PAD, Recommender
from recsys.models.blend import Blend
from recsys.models.features import FeatureTable
from recsys.models.graph import LightGCN
from recsys.models.mf import MatrixFactorization
from recsys.models.neumf import NeuMF
from recsys.models.sequence import GRU4Rec, SASRec
from recsys.models.two_tower import TwoTower

DEFAULT_LOSS = {"mf": "bpr", "neumf": "bce", "two_tower": "softmax", "lightgcn": "bpr"}
# Models that compute a user from their recent items (no per-user table).
HISTORY_MODELS = ("sasrec", "gru4rec", "multvae", "ease")


def build_model(spec: dict[str, Any], users: FeatureTable | None = None,
                items: FeatureTable | None = None) -> Recommender:
    """`spec` is the model section of an artifact's config: name, sizes and hyper-parameters."""
    name = spec["model"]
    if name in ("mf", "als"):  # ALS's factors are an MF without biases
        return MatrixFactorization(spec["n_users"], spec["n_items"], spec["dim"])
    if name == "lightgcn":
        return LightGCN(spec["n_users"], spec["n_items"], spec["dim"], spec["layers"], spec.get("fanout"))
    if name == "neumf":
        return NeuMF(spec["n_users"], spec["n_items"], spec["dim"], spec["hidden"], spec["dropout"])
    if name == "two_tower":
        users = users or FeatureTable.empty(spec["user_features"])
        items = items or FeatureTable.empty(spec["item_features"])
        return TwoTower(users, items, spec["dim"], spec["hidden"], spec["dropout"],
                        spec["id_dropout"], spec["temperature"])
    if name in ("sasrec", "gru4rec"):
        if items is None and spec.get("item_features"):  # train.item_content
            items = FeatureTable.empty(spec["item_features"])
        content = {"items": items, "id_dropout": spec.get("id_dropout", 0.0)}
        if name == "sasrec":
            return SASRec(spec["n_items"], spec["dim"], spec["max_len"], spec["blocks"], spec["heads"],
                          spec["dropout"], **content)
        return GRU4Rec(spec["n_items"], spec["dim"], spec["max_len"], spec["blocks"], spec["dropout"],
                       **content)
    if name == "multvae":
        return MultVAE(spec["n_items"], spec["vae_hidden"], spec["vae_dropout"], spec["max_len"])
    if name == "ease":
        return EASE(spec["n_items"], spec["max_len"])
    if name == "blend":
        return Blend([build_model(m) for m in spec["members"]], spec["weights"])
    raise ValueError(f"unknown model {name!r}; known: {', '.join([*DEFAULT_LOSS, *HISTORY_MODELS])}")


def reads_history(spec: dict[str, Any]) -> bool:
    """Whether the model of `spec` (an artifact's model config) reads users' histories."""
    if spec["model"] == "blend":
        return any(reads_history(m) for m in spec["members"])
    return spec["model"] in HISTORY_MODELS


def history_only(spec: dict[str, Any]) -> bool:
    """Whether it needs nothing but histories (no per-user table): it can score new users."""
    if spec["model"] == "blend":
        return all(history_only(m) for m in spec["members"])
    return spec["model"] in HISTORY_MODELS


def history_length(spec: dict[str, Any]) -> int | None:
    """The longest history the model (or any member) reads."""
    if spec["model"] == "blend":
        return max((history_length(m) or 0 for m in spec["members"]), default=0) or None
    return spec.get("max_len") if spec["model"] in HISTORY_MODELS else None


def ranker(model: Recommender, n_items: int, histories: Any = None) -> Callable[[Tensor], Tensor]:
    """users [B] -> scores [B, n_items], for the evaluator. History models read each user's
    row of `histories` (an object with `rows(users) -> [B, L]`, e.g. `snapshot.Histories`)."""
    if model.reads_history and histories is None:
        raise ValueError(f"{type(model).__name__} scores users from their histories; none given")

    def score(users: Tensor) -> Tensor:
        seq = None
        if model.reads_history:
            seq = torch.as_tensor(histories.rows(users.cpu().numpy()), device=users.device)
        return model.score_users(users, seq)

    return score


__all__ = ["Recommender", "build_model", "DEFAULT_LOSS", "FeatureTable", "HISTORY_MODELS", "PAD", "ranker"]
