"""What runs on the executors: rebuild the broadcast model once per Python worker, then turn
batches of users into ranked rows with one matrix product and one top-k per batch.

Input batches (Arrow): `user_id`, `user_idx`, `seen` (list of item_idx to exclude), `source`
(`model`, `features` or `popular`). Output batches: the table's columns but `ds`.
"""
from __future__ import annotations

import io
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import torch

from recsys import faults
from recsys.models import build_model
from recsys.score.topn import CAP_HEADROOM, cap_per_category, exclude_, take_ragged, top_n

OUTPUT_SCHEMA = "user_id string, item_id string, rank int, score float, source_code byte"
SOURCES = ("model", "features", "popular")
POPULAR = "popular"


@dataclass
class Plan:
    """Everything a Python worker needs, sent once as a broadcast variable."""
    version: str
    model: dict[str, Any]  # the artifact's model config
    weights: bytes  # model.pt: a state dict of tensors
    item_ids: list[str]  # original item id of each item_idx
    top_n: int
    candidates: int  # non-factorised models: candidates to re-rank
    blocked: np.ndarray | None  # [n_items] bool, never recommended
    category: np.ndarray | None  # [n_items] category code
    cap: int | None
    popular: np.ndarray  # item_idx of the popularity list, best first (rules applied)
    popular_scores: np.ndarray
    batch_cells: int
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)  # one per score job
    fault: str | None = field(default_factory=faults.current)  # for the failure tests


class Scorer:
    """The model with its item vectors computed once; `rank(users, seen)` per batch."""

    def __init__(self, plan: Plan):
        torch.set_num_threads(1)  # Spark runs one Python worker per core
        self.plan = plan
        self.model = build_model(plan.model)
        self.model.load_state_dict(torch.load(io.BytesIO(plan.weights), weights_only=True))
        self.model.eval()
        items = torch.arange(len(plan.item_ids))
        with torch.no_grad():
            if self.model.factorised:
                self.item_vectors = self.model.item_vectors(items)
            else:
                self.item_vectors = self.model.candidate_item_vectors(items)
        self.item_ids = pa.array(plan.item_ids, pa.string())
        self.blocked = (torch.as_tensor(np.flatnonzero(plan.blocked))
                        if plan.blocked is not None else None)
        self.category = torch.as_tensor(plan.category) if plan.category is not None else None
        self.rows_per_batch = max(1, plan.batch_cells // max(1, len(plan.item_ids)))

    @torch.no_grad()
    def rank(self, users: np.ndarray, offsets: np.ndarray, seen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Top-N item_idx and scores [B, N] for users [B]; -inf marks a missing tail."""
        p = self.plan
        u = torch.as_tensor(users, dtype=torch.long)
        want = p.top_n if self.category is None else min(len(p.item_ids), CAP_HEADROOM * p.top_n)
        if self.model.factorised:
            scores = self.model.user_vectors(u) @ self.item_vectors.T
            items, values = top_n(exclude_(scores, offsets, seen, self.blocked), None, want)
        else:  # two stages: factorised candidates, then the full model on those alone
            scores = self.model.candidate_user_vectors(u) @ self.item_vectors.T
            cand, cand_scores = top_n(exclude_(scores, offsets, seen, self.blocked), None,
                                      max(want, p.candidates))
            full = self.model.score(u, cand).masked_fill(~torch.isfinite(cand_scores), float("-inf"))
            values, order = torch.sort(full, dim=1, descending=True)
            items = cand.gather(1, order)[:, :want]
            values = values[:, :want]
        if self.category is not None:
            items, values = cap_per_category(items, values, self.category, p.cap, p.top_n)
        return items[:, :p.top_n].numpy(), values[:, :p.top_n].numpy()

    def to_rows(self, user_ids: pa.Array, items: np.ndarray, scores: np.ndarray,
                source: str) -> pa.RecordBatch:
        valid = np.isfinite(scores)
        counts = valid.sum(1)
        ranks = np.broadcast_to(np.arange(1, items.shape[1] + 1, dtype=np.int32), items.shape)
        # `source` travels as a small code and the model version not at all: the JVM adds
        # both as constants, which is far cheaper than 100 strings per user through Arrow.
        return pa.RecordBatch.from_arrays([
            user_ids.take(pa.array(np.repeat(np.arange(len(counts)), counts))),
            self.item_ids.take(pa.array(items[valid])),
            pa.array(ranks[valid]), pa.array(scores[valid].astype(np.float32)),
            pa.array(np.full(int(counts.sum()), SOURCES.index(source), dtype=np.int8)),
        ], names=["user_id", "item_id", "rank", "score", "source_code"])

    def score_batch(self, batch: pa.RecordBatch) -> Iterator[pa.RecordBatch]:
        user_ids = batch.column("user_id")
        users = batch.column("user_idx").to_numpy()
        seen = batch.column("seen")
        sources = batch.column("source").to_numpy(zero_copy_only=False)
        offsets = seen.offsets.to_numpy()
        flat = seen.values.to_numpy()
        popular = sources == POPULAR
        if popular.any():
            idx = np.flatnonzero(popular)
            k = len(self.plan.popular)
            items = np.broadcast_to(self.plan.popular, (len(idx), k))
            scores = np.broadcast_to(self.plan.popular_scores, (len(idx), k))
            yield self.to_rows(user_ids.take(pa.array(idx)), items, scores, POPULAR)
        for source in np.unique(sources[~popular]):
            idx = np.flatnonzero(sources == source)
            for start in range(0, len(idx), self.rows_per_batch):
                part = idx[start:start + self.rows_per_batch]
                sub_offsets, sub_seen = take_ragged(offsets, flat, part)
                items, scores = self.rank(users[part], sub_offsets, sub_seen)
                yield self.to_rows(user_ids.take(pa.array(part)), items, scores, str(source))
                faults.maybe_fail("score_batch", self.plan.fault)


_SCORERS: dict[str, Scorer] = {}


def score_partition(plan_broadcast: Any, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """The mapInArrow function: one Scorer per Python worker and broadcast (Spark reuses
    workers across jobs, and two artifacts may share a version string)."""
    plan: Plan = plan_broadcast.value
    scorer = _SCORERS.get(plan.run_id)
    if scorer is None:
        _SCORERS.clear()
        scorer = _SCORERS[plan.run_id] = Scorer(plan)
    for batch in batches:
        yield from scorer.score_batch(batch)
