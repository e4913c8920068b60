"""What runs on the executors: rebuild the broadcast model once per Python worker, then turn
the users of a partition into ranked rows with one matrix product and one top-k per batch.

Input (Arrow, all rows of one user in one partition): one row per user to score (`user_idx`,
`user_id`, `source`: `model`, `features` or `popular`; `item_idx` null) and one per item in a
user's history (`user_idx`, `item_idx`, and for history models `ts`), which are never
recommended to that user. History models read the user from the newest `max_len` of those
items, in time order (ties by item id, as the splits break them). The ranked
rows either go back to Spark's writer (`score_partition`) or are written by the worker itself
(`score_and_write`, see writer.py).
"""
from __future__ import annotations

import io
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from recsys import faults
from recsys.models import build_model
from recsys.score import writer
from recsys.score.reasons import BY_SOURCE, Reasons
from recsys.ranking.topk import (CAP_HEADROOM, cap_per_category, exclude_, group_ragged, ragged_tail,
                                 take_ragged, top_n, top_n_reserving)

OUTPUT_SCHEMA = ("user_id string, item_id string, rank int, score float, because_item_id string, "
                 "reason_code byte, source_code byte")
SOURCES = writer.SOURCES
POPULAR = "popular"
OPTED_OUT = "opted_out"  # privacy.opt_out: the popularity list, whatever the model knows


class Ranked(NamedTuple):
    """One batch of output: `users` users of one `source`, their rows (`user_id`, `item_id`,
    `rank`, `score`, `because_item_id`, `reason_code`) in user then rank order."""
    source: str
    users: int
    rows: pa.RecordBatch


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
    max_len: int | None = None  # history models: the newest items a user is read from
    # History models scoring a newer snapshot than they were trained on: its item_idx -> the
    # model's (-1: an item the model does not know). None: the same item ids.
    item_map: np.ndarray | None = None
    # score.new_item_share: items with no interactions (scored by a content-aware model) and
    # how many of each user's top_n are reserved for the best of them.
    new_items: np.ndarray | None = None
    new_slots: int = 0
    new_total: int = 0  # items without interactions in the catalogue (recommended or blocked)
    reasons: bool = False  # score.reasons: a reason code and because_item_id per row
    reason_history: int = 50  # ... chosen among the user's newest this many items
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
        self.two_stage = hasattr(self.model, "candidate_item_vectors")
        with torch.no_grad():
            if self.model.factorised:
                self.item_vectors = self.model.item_vectors(items)
            elif self.two_stage:
                self.item_vectors = self.model.candidate_item_vectors(items)
        self.item_ids = pa.array(plan.item_ids, pa.string())
        self.blocked = (torch.as_tensor(np.flatnonzero(plan.blocked))
                        if plan.blocked is not None else None)
        self.category = torch.as_tensor(plan.category) if plan.category is not None else None
        self.new_items = (torch.as_tensor(np.flatnonzero(plan.new_items))
                          if plan.new_items is not None and plan.new_slots > 0 else None)
        self.rows_per_batch = max(1, plan.batch_cells // max(1, len(plan.item_ids)))
        # One score block, reused: a fresh [batch, n_items] block per batch fragments the heap
        # around the small arrays kept for the Parquet writer (workers grew to 5 GB at 100k items).
        self.block = torch.empty(self.rows_per_batch, len(plan.item_ids))
        # A blend: its factorised members' item vectors once. With every member factorised the
        # whole blend is one matrix product (`Blend.fold`); otherwise each member is scored into
        # one more block, standardised there and added to the first.
        self.member_items = self.folded = None
        if hasattr(self.model, "score_into"):
            with torch.no_grad():
                member_items = [m.item_vectors(items) if m.factorised else None for m in self.model.members]
            if all(v is not None for v in member_items):
                self.folded = self.model.fold(member_items)  # holds the vectors: no second copy
                # views of the stacked vectors, one per member, for the reasons
                member_items = list(torch.split(self.folded[0], [v.shape[1] for v in member_items], dim=1))
            else:
                self.member_items, self.scratch = member_items, torch.empty_like(self.block)
        self.reasons = None
        if plan.reasons:
            vectors = (member_items if hasattr(self.model, "score_into")
                       else getattr(self, "item_vectors", None))
            self.reasons = Reasons(self.model, vectors, plan.new_items)

    @torch.no_grad()
    def rank(self, users: np.ndarray, offsets: np.ndarray, seen: np.ndarray,
             disliked: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-N item_idx and scores [B, N] for users [B]; -inf marks a missing tail. The users'
        `seen` items (their history) and `disliked` ones (offsets, items: seen, not positives)
        are never recommended."""

        def exclude(scores):
            exclude_(scores, offsets, seen, self.blocked)
            return scores if disliked is None else exclude_(scores, *disliked)

        p = self.plan
        u = torch.as_tensor(users, dtype=torch.long)
        want = p.top_n if self.category is None else min(len(p.item_ids), CAP_HEADROOM * p.top_n)
        block = self.block[:len(u)]
        model = self.model
        # History models read the user from their newest items (`seen` is in time order).
        seq = torch.as_tensor(ragged_tail(offsets, seen, p.max_len)) if model.reads_history else None
        if self.two_stage:  # factorised candidates, then the full model on those alone
            scores = torch.mm(model.candidate_user_vectors(u), self.item_vectors.T, out=block)
            cand, cand_scores = top_n(exclude(scores), None, max(want, p.candidates))
            full = model.score(u, cand).masked_fill(~torch.isfinite(cand_scores), float("-inf"))
            values, order = torch.sort(full, dim=1, descending=True)
            items = cand.gather(1, order)[:, :want]
            values = values[:, :want]
        else:
            if model.factorised:  # one matrix product with the item vectors computed once
                scores = torch.mm(model.query_vectors(u, seq), self.item_vectors.T, out=block)
            elif self.folded is not None:  # a blend of factorised members
                scores = model.score_folded(block, u, seq, self.folded)
            elif self.member_items is not None:  # a blend with a member that is not factorised
                scores = model.score_into(block, self.scratch[:len(u)], u, seq, self.member_items)
            else:  # ease
                scores = model.score_users(u, seq)
            if self.new_items is not None and len(self.new_items):
                items, values = top_n_reserving(exclude(scores), self.new_items, want, p.new_slots)
            else:
                items, values = top_n(exclude(scores), None, want)
        if self.category is not None:
            items, values = cap_per_category(items, values, self.category, p.cap, p.top_n)
        return items[:, :p.top_n].numpy(), values[:, :p.top_n].numpy()

    def explain(self, items: np.ndarray, scores: np.ndarray, offsets: np.ndarray, seen: np.ndarray,
                source: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(because item_idx or -1, reason code) per row, or None with score.reasons off."""
        if self.reasons is None:
            return None
        width = min(self.plan.reason_history, int(np.diff(offsets).max(initial=0)))  # no all-PAD columns
        history = ragged_tail(offsets, seen, width) if source == "model" else np.empty((len(items), 0), np.int64)
        return self.reasons.explain(items, scores, history, source)

    def to_rows(self, user_ids: pa.Array, items: np.ndarray, scores: np.ndarray,
                source: str, why: tuple[np.ndarray, np.ndarray] | None = None) -> Ranked:
        valid = np.isfinite(scores)
        counts = valid.sum(1)
        ranks = np.broadcast_to(np.arange(1, items.shape[1] + 1, dtype=np.int32), items.shape)
        n = int(counts.sum())
        if why is None:
            because, reason = pa.nulls(n, pa.string()), pa.nulls(n, pa.int8())
        else:
            idx = why[0][valid]
            because = self.item_ids.take(pa.array(idx, mask=idx < 0))
            reason = pa.array(why[1][valid])
        return Ranked(source, len(counts), pa.RecordBatch.from_arrays([
            user_ids.take(pa.array(np.repeat(np.arange(len(counts)), counts))),
            self.item_ids.take(pa.array(items[valid])),
            pa.array(ranks[valid]), pa.array(scores[valid].astype(np.float32)), because, reason,
        ], names=["user_id", "item_id", "rank", "score", "because_item_id", "reason_code"]))

    def score_users(self, user_ids: pa.Array, users: np.ndarray, sources: np.ndarray,
                    offsets: np.ndarray, seen: np.ndarray,
                    disliked: tuple[np.ndarray, np.ndarray] | None = None) -> Iterator[Ranked]:
        """Rank `users` (with their ids and sources) excluding each one's `seen` items, a
        ragged array cut at `offsets` (and `disliked`, another); popular and opted-out users
        share one list."""
        popular = np.isin(sources, (POPULAR, OPTED_OUT))
        for source in (POPULAR, OPTED_OUT):
            idx = np.flatnonzero(sources == source)
            if not len(idx):
                continue
            k = len(self.plan.popular)
            items = np.broadcast_to(self.plan.popular, (len(idx), k))
            scores = np.broadcast_to(self.plan.popular_scores, (len(idx), k))
            why = None if self.reasons is None else (
                np.full(items.shape, -1, np.int64), np.full(items.shape, BY_SOURCE[source], np.int8))
            yield self.to_rows(user_ids.take(pa.array(idx)), items, scores, source, why)
        for source in np.unique(sources[~popular]):
            idx = np.flatnonzero(sources == source)
            for start in range(0, len(idx), self.rows_per_batch):
                part = idx[start:start + self.rows_per_batch]
                sub_offsets, sub_seen = take_ragged(offsets, seen, part)
                sub_disliked = None if disliked is None else take_ragged(*disliked, part)
                items, scores = self.rank(users[part], sub_offsets, sub_seen, sub_disliked)
                why = self.explain(items, scores, sub_offsets, sub_seen, str(source))
                yield self.to_rows(user_ids.take(pa.array(part)), items, scores, str(source), why)
                faults.maybe_fail("score_batch", self.plan.fault)


def split_input(table: pa.Table, item_map: np.ndarray | None = None) -> tuple[Any, ...]:
    """A partition's rows -> user ids, user_idx, sources, and each user's seen items (offsets,
    flat; in time order when the rows carry `ts`), the arguments of `Scorer.score_users`; rows
    flagged `disliked` (seen, not positives) are only excluded, never read as history."""
    is_user = table.column("item_idx").is_null()
    users = table.filter(is_user)
    history = table.filter(pc.invert(is_user))
    disliked = None
    if "disliked" in table.column_names:
        flag = history.column("disliked").fill_null(False)
        if pc.any(flag).as_py():
            rows = history.filter(flag)
            items = rows.column("item_idx").to_numpy()
            if item_map is not None:
                items = item_map[items]
            known = items >= 0
            disliked = group_ragged(users.column("user_idx").to_numpy(),
                                    rows.column("user_idx").to_numpy()[known], items[known])
        history = history.filter(pc.invert(flag))
    user_idx = users.column("user_idx").to_numpy()
    pair_users = history.column("user_idx").to_numpy()
    pair_items = history.column("item_idx").to_numpy()
    if "ts" in table.column_names:  # group_ragged's sort is stable: each run stays in this order
        order = np.lexsort((pair_items, history.column("ts").to_numpy()))
        pair_users, pair_items = pair_users[order], pair_items[order]
    if item_map is not None:
        pair_items = item_map[pair_items]
        known = pair_items >= 0
        pair_users, pair_items = pair_users[known], pair_items[known]
    offsets, seen = group_ragged(user_idx, pair_users, pair_items)
    return (users.column("user_id").combine_chunks(), user_idx,
            users.column("source").to_numpy(zero_copy_only=False), offsets, seen, disliked)


_SCORERS: dict[str, Scorer] = {}


def _scorer(plan: Plan) -> Scorer:
    """One Scorer per Python worker and score run (Spark reuses workers across jobs, and two
    artifacts may share a version string)."""
    scorer = _SCORERS.get(plan.run_id)
    if scorer is None:
        _SCORERS.clear()
        scorer = _SCORERS[plan.run_id] = Scorer(plan)
    return scorer


def _ranked(plan: Plan, batches: Iterator[pa.RecordBatch]) -> Iterator[Ranked]:
    """The whole partition is read first: a user's history rows may come after the user's."""
    batches = list(batches)
    if not batches:
        return
    yield from _scorer(plan).score_users(*split_input(pa.Table.from_batches(batches), plan.item_map))


def score_partition(plan_broadcast: Any, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """mapInArrow for Spark's writer: the ranked rows with a `source_code` column (the JVM
    turns the code and the model version into constants, far cheaper than strings per row)."""
    for source, _, rows in _ranked(plan_broadcast.value, batches):
        code = pa.array(np.full(rows.num_rows, SOURCES.index(source), dtype=np.int8))
        yield pa.RecordBatch.from_arrays([*rows.columns, code], names=[*rows.schema.names, "source_code"])


def score_and_write(plan_broadcast: Any, directory: str,
                    batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """mapInArrow that writes the ranked rows itself: one Parquet file per task attempt
    under `directory`, one summary row back (writer.SUMMARY_SCHEMA)."""
    plan: Plan = plan_broadcast.value
    yield from writer.write_task(directory, _ranked(plan, batches), plan.version, plan.fault)
