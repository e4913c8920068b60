"""Models fitted on Spark and the driver instead of by SGD on the workers: EASE and Spark ALS.

Both follow one recipe: fit each setting of a small grid on the training split, keep the one
with the best validation NDCG@K (the evaluator training uses for every model), then, with
`train.refit`, fit that setting again on train + valid: those are the published weights.

- EASE (Steck, 2019): the item Gram matrix G = XᵀX (users sharing each pair of items) is
  aggregated by Spark, a self-join of each user's items counted per item pair, so the cost is
  Σ_u n_u² over users and what reaches the driver is at most n_items² counts, never the
  interactions; G + λI is inverted on the driver (float64), the catalogue-sized part, which is
  why `train.ease_max_items` caps it. The grid is `train.ease_lambdas` x `train.ease_max_lens`:
  the second is how many of a user's newest items the scores sum over, a scoring-time choice
  (each λ is inverted once; on a log without timestamps the train job leaves only `max_len`).
  Where the newest items say the most of what comes next, few of them win: on MovieLens
  validation chose 10 of up to 200 (README, quality).
- ALS: Spark MLlib's implicit ALS on the weights as confidence, the grid
  `train.als_regs` x `train.als_alphas`; its user and item factors are published as an `mf`
  model without biases, so the scorer ranks with them like any factorised model.
"""
from __future__ import annotations

import functools
import logging
import time
from typing import Any, Callable

import numpy as np
import torch
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys import schema as S
from recsys.config import TrainConfig
from recsys.models import Recommender, build_model
from recsys.models.autoencoders import ease_from_gram
from recsys.snapshot import Snapshot
from recsys.train.validation import Validation

log = logging.getLogger("recsys.train")


def gram(pairs: DataFrame, n_items: int) -> torch.Tensor:
    """[n_items, n_items] float64: how many users have both items (the diagonal: each item's
    users), from (user_idx, item_idx) rows."""
    distinct = pairs.select(S.USER_IDX, S.ITEM_IDX).distinct()
    left = distinct.withColumnRenamed(S.ITEM_IDX, "i")
    right = distinct.withColumnRenamed(S.ITEM_IDX, "j")
    counts = left.join(right, S.USER_IDX).groupBy("i", "j").agg(F.count(F.lit(1)).alias("n")).toPandas()
    g = torch.zeros(n_items, n_items, dtype=torch.float64)
    g[torch.as_tensor(counts["i"].to_numpy(), dtype=torch.long),
      torch.as_tensor(counts["j"].to_numpy(), dtype=torch.long)] = torch.as_tensor(
        counts["n"].to_numpy(), dtype=torch.float64)
    return g


def _grid_then_refit(spec: dict[str, Any], t: TrainConfig, settings: list[dict[str, Any]],
                     fit: Callable[[dict[str, Any], bool], Recommender], uses_history: bool) -> dict[str, Any]:
    """Fit every setting on train (`fit(setting, False)`), keep the best on validation, refit it
    on train + valid (`fit(setting, True)`); a result shaped like the training loop's."""
    validation = Validation(spec["paths"], spec["model"]["n_items"], t, uses_history)
    history, best, best_at, best_state = [], -1.0, -1, None
    for i, setting in enumerate(settings):
        t0 = time.perf_counter()
        model = fit(setting, False)
        metrics = validation.evaluate(model)
        score = metrics[f"ndcg@{t.eval_k}"]
        history.append({"epoch": i, **setting, "seconds": round(time.perf_counter() - t0, 3),
                        **{f"valid_{k}": v for k, v in metrics.items()}})
        log.info("%s %s: ndcg@%d %.4f", spec["model"]["model"], setting, t.eval_k, score)
        if score > best:
            best, best_at, best_state = score, i, model.state_dict()
    refit, state = None, best_state
    if t.refit:
        t0 = time.perf_counter()
        state = fit(settings[best_at], True).state_dict()
        refit = [{"epoch": 0, **settings[best_at], "seconds": round(time.perf_counter() - t0, 3)}]
    return {"state": state, "fit_state": best_state, "history": history, "refit": refit,
            "best_epoch": best_at, "best_ndcg": best, "baseline": validation.baseline,
            "eval_k": t.eval_k, "world": 1, "device": "cpu", "setting": settings[best_at]}


def _pairs(spark: SparkSession, snap: Snapshot, with_valid: bool, half_life: float | None = None) -> DataFrame:
    """(user_idx, item_idx, weight) of train (and valid); with `half_life` the weight times
    0.5 ** (recency / half_life), as the SGD pair models weigh their rows."""
    cols = [S.USER_IDX, S.ITEM_IDX, S.WEIGHT] + ([S.RECENCY] if half_life else [])
    df = spark.read.parquet(snap.dataset(S.TRAIN)).select(*cols)
    if with_valid:
        df = df.unionByName(spark.read.parquet(snap.dataset(S.VALID)).select(*cols))
    if half_life:
        decay = F.pow(F.lit(2.0), -F.col(S.RECENCY) / F.lit(half_life))
        df = df.select(S.USER_IDX, S.ITEM_IDX, (F.col(S.WEIGHT) * decay).cast("float").alias(S.WEIGHT))
    return df


def fit_ease(spark: SparkSession, snap: Snapshot, spec: dict[str, Any], t: TrainConfig) -> dict[str, Any]:
    n_items = spec["model"]["n_items"]
    grams: dict[bool, torch.Tensor] = {}

    @functools.lru_cache(maxsize=1)  # one B at a time (it is n_items²): settings run λ by λ
    def solve(lam: float, with_valid: bool) -> torch.Tensor:
        if with_valid not in grams:
            grams[with_valid] = gram(_pairs(spark, snap, with_valid), n_items)
        return ease_from_gram(grams[with_valid], lam)

    def fit(setting: dict[str, Any], with_valid: bool) -> Recommender:
        model = build_model({**spec["model"], "max_len": setting["max_len"]})
        return model.set_weights(solve(setting["lambda"], with_valid))

    windows = sorted({min(n, t.max_len) for n in t.ease_max_lens})  # at most what histories hold
    result = _grid_then_refit(spec, t, [{"lambda": lam, "max_len": n} for lam in t.ease_lambdas for n in windows],
                              fit, uses_history=True)
    result["model"] = {**spec["model"], "max_len": result["setting"]["max_len"]}  # what is published
    return result


def fit_als(spark: SparkSession, snap: Snapshot, spec: dict[str, Any], t: TrainConfig) -> dict[str, Any]:
    from pyspark.ml.recommendation import ALS
    n_users, n_items, rank = spec["model"]["n_users"], spec["model"]["n_items"], spec["model"]["dim"]
    data = {False: _pairs(spark, snap, False, t.recency_half_life).cache()}

    def fit(setting: dict[str, Any], with_valid: bool) -> Recommender:
        if with_valid not in data:
            data[with_valid] = _pairs(spark, snap, with_valid, t.recency_half_life).cache()
        als = ALS(rank=rank, maxIter=t.als_max_iter, regParam=setting["reg"], alpha=setting["alpha"],
                  implicitPrefs=True, userCol=S.USER_IDX, itemCol=S.ITEM_IDX, ratingCol=S.WEIGHT,
                  seed=t.seed, coldStartStrategy="drop").fit(data[with_valid])
        model = build_model(spec["model"])
        state = model.state_dict()
        for name, factors in (("user.weight", als.userFactors), ("item.weight", als.itemFactors)):
            rows = factors.toPandas()  # the model's own tables: what the artifact stores anyway
            table = torch.zeros_like(state[name])
            table[torch.as_tensor(rows["id"].to_numpy(), dtype=torch.long)] = torch.as_tensor(
                np.stack(rows["features"].to_numpy()), dtype=torch.float32)
            state[name] = table
        state["item_bias.weight"] = torch.zeros(n_items, 1)
        model.load_state_dict(state)
        return model

    settings = [{"reg": r, "alpha": a} for r in t.als_regs for a in t.als_alphas]
    try:
        return _grid_then_refit(spec, t, settings, fit, uses_history=False)
    finally:
        for df in data.values():
            df.unpersist()
