"""The snapshot contract: what prepare publishes for one `ds`, and how the other stages read it.

    <root>/data/<dataset>/ds=<ds>/
        train/, valid/        user_idx int32, item_idx int32, ts timestamp, weight float,
                              recency int32 (0 for the user's newest row of train + valid,
                              1 for the one before, ...; ties as histories)[, value]
        histories/            per user, the newest `history_len` rows of train and valid in
                              time order (ties by item id), as fixed-length lists padded on the
                              left (Petastorm refuses lists of unequal length): user_idx,
                              length, dropped (older rows left out), items (PAD -1), ts
                              (epoch seconds), weights, valid (1 where the row is validation)
        user_index/, item_index/   user_id / item_id (original, string) -> user_idx / item_idx
        users/, items/        features keyed by the dense id, `_features.json` describing them
        rejects/              raw, reason: the quarantined rows
        seen/                 user_idx, item_idx, ts, value: pairs seen but not positives (a
                              rating below prepare.weight.threshold), excluded when scoring
        graph/                user_idx, item_idx, valid, norm_train, norm_all: the edges of
                              train + valid with LightGCN's normalisations (prep/graph.py)
        _COMPLETE.json        written last: {"ds", "rows": {dataset: count}, "snapshot_time",
                              "history_len", "has_time"}; a log without timestamps has null ts
                              everywhere, snapshot_time null, has_time false, and histories
                              in a seeded random order

A snapshot is built under `<root>/data/<dataset>/_staging/` and renamed into place whole, so a
reader that finds the marker reads a complete snapshot. Train, evaluation and score meet the
data only here (and at the model artifact): they never import prepare, and prepare writes its
layout through these names.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from recsys import fsio
from recsys import schema as S
from recsys.errors import MissingInputError, SnapshotError
from recsys.storage import join, resolve_root

if TYPE_CHECKING:  # the digests run on Spark; the readers (used by models and workers) do not
    from pyspark.sql import DataFrame, SparkSession

# The id maps and the columns their digests are taken over.
ID_MAPS = {S.USER_INDEX: (S.USER_ID, S.USER_IDX), S.ITEM_INDEX: (S.ITEM_ID, S.ITEM_IDX)}


def snapshot_path(root: str, dataset: str, ds: str) -> str:
    return join(resolve_root(root), "data", dataset, f"ds={ds}")


def staging_root(root: str, dataset: str) -> str:
    """Where prepare assembles a snapshot before renaming it into place."""
    return join(resolve_root(root), "data", dataset, "_staging")


@dataclass(frozen=True)
class Snapshot:
    """A published snapshot: its path and what its marker says."""
    path: str
    marker: dict[str, Any] = field(default_factory=dict)

    @property
    def ds(self) -> str:
        return self.marker.get("ds", "")

    @property
    def rows(self) -> dict[str, int]:
        return self.marker.get("rows", {})

    @property
    def snapshot_time(self) -> str | None:
        return self.marker.get("snapshot_time")

    @property
    def has_time(self) -> bool:
        """False for a log without timestamps: no time order (histories in a seeded order)."""
        return self.marker.get("has_time", True)

    @property
    def history_len(self) -> int | None:
        """The length of the stored histories; None for a snapshot written without them."""
        return self.marker.get("history_len")

    def dataset(self, name: str) -> str:
        """The directory of one dataset (`S.TRAIN`, `S.ITEM_INDEX`, ...)."""
        return join(self.path, name)


def open_snapshot(root: str, dataset: str, ds: str) -> Snapshot:
    """The complete snapshot of `ds`, or an error that says to run prepare."""
    return at(snapshot_path(root, dataset, ds), f"ds={ds}")


def at(path: str, what: str | None = None) -> Snapshot:
    """The complete snapshot at `path` (e.g. the one an artifact was trained on)."""
    marker = join(path, S.COMPLETE_MARKER)
    if not fsio.exists(marker):
        raise MissingInputError(f"no complete prepared snapshot for {what or path} at {path}: "
                                f"run prepare for that ds first")
    return Snapshot(path, json.loads(fsio.read_bytes(marker)))


def marker(ds: str, rows: dict[str, int], snapshot_time: str | None, history_len: int,
           has_time: bool = True) -> dict[str, Any]:
    """The completeness marker prepare writes last (see the module docstring)."""
    return {"ds": ds, "rows": rows, "snapshot_time": snapshot_time, "history_len": history_len,
            "has_time": has_time}


# --- reading ---------------------------------------------------------------------------------

def read_pairs(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(user_idx, item_idx) of a prepared dataset (train or valid), as int64 arrays."""
    table = fsio.read_table(path, columns=[S.USER_IDX, S.ITEM_IDX])
    return (table.column(S.USER_IDX).to_numpy().astype(np.int64),
            table.column(S.ITEM_IDX).to_numpy().astype(np.int64))


def read_graph(path: str, refit: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user_idx, item_idx, norm) of the graph's edges: the training edges with their training
    normalisation for a fit, every edge with the full one for the refit."""
    table = fsio.read_table(path, columns=[S.USER_IDX, S.ITEM_IDX, S.GRAPH_VALID, S.GRAPH_NORM_TRAIN,
                                           S.GRAPH_NORM_ALL]).to_pandas()
    if not refit:
        table = table[table[S.GRAPH_VALID] == 0]
    norm = table[S.GRAPH_NORM_ALL if refit else S.GRAPH_NORM_TRAIN]
    return (table[S.USER_IDX].to_numpy(np.int64), table[S.ITEM_IDX].to_numpy(np.int64),
            norm.to_numpy(np.float32))


@dataclass(frozen=True)
class Histories:
    """Users' recent items as the history models read them: `items` [n, L] int64 in time order,
    right-aligned, padded on the left with -1, for the sorted `users`."""
    users: np.ndarray
    items: np.ndarray

    def rows(self, users: np.ndarray) -> np.ndarray:
        """[len(users), L]: each user's row; all padding for a user without history."""
        at = np.searchsorted(self.users, users).clip(max=max(len(self.users) - 1, 0))
        found = (self.users[at] == users) if len(self.users) else np.zeros(len(users), bool)
        out = np.full((len(users), self.items.shape[1]), -1, np.int64)
        out[found] = self.items[at[found]]
        return out


def right_align(items: np.ndarray, keep: np.ndarray, length: int,
                skip: np.ndarray | None = None) -> np.ndarray:
    """The kept entries of each row of `items` [n, H] (in order), the newest `length` of them,
    right-aligned in [n, length] and padded on the left with -1. Used to drop the validation
    rows from a history for the first fit, and to cut a history to a model's length.
    `skip` [n]: leave out each row's newest skip[i] kept entries first (an older window)."""
    keep = keep & (items >= 0)
    from_end = np.cumsum(keep[:, ::-1], axis=1)[:, ::-1]  # kept entries at or after each one
    if skip is not None:
        from_end = from_end - skip[:, None]
    take = keep & (from_end >= 1) & (from_end <= length)
    rows, cols = np.nonzero(take)
    out = np.full((len(items), length), -1, np.int64)
    out[rows, length - from_end[rows, cols]] = items[rows, cols]
    return out


def read_histories(path: str, length: int, *, include_valid: bool,
                   users: np.ndarray | None = None) -> Histories:
    """The `histories` dataset at `path`, each cut to its newest `length` items; without the
    validation rows unless `include_valid`; only `users` (sorted user_idx) when given."""
    table = fsio.read_table(path, columns=[S.USER_IDX, S.HISTORY_ITEMS, S.HISTORY_VALID])
    user_idx = table.column(S.USER_IDX).to_numpy().astype(np.int64)
    rows = np.arange(len(user_idx)) if users is None else np.flatnonzero(np.isin(user_idx, users))
    order = rows[np.argsort(user_idx[rows], kind="stable")]

    def matrix(column: str) -> np.ndarray:
        chunked = table.column(column).take(order).combine_chunks()
        width = len(chunked[0]) if len(chunked) else 0
        return chunked.values.to_numpy(zero_copy_only=False).reshape(len(order), width)

    items = matrix(S.HISTORY_ITEMS)
    keep = np.ones(items.shape, bool) if include_valid else matrix(S.HISTORY_VALID) == 0
    return Histories(user_idx[order], right_align(items, keep, length))


def read_features(path: str, idx: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """`users` or `items`: the table in dense-id order and its `_features.json`."""
    meta = json.loads(fsio.read_bytes(join(path, S.FEATURES_META)))
    table = fsio.read_table(path).to_pandas().sort_values(idx).reset_index(drop=True)
    if not (table[idx].to_numpy() == np.arange(len(table))).all():
        raise SnapshotError(f"{path}: {idx} is not the dense range 0..{len(table) - 1}")
    return table, meta


def read_item_ids(snap: Snapshot) -> pd.Series:
    """The original item id of each item_idx, in item_idx order."""
    index = fsio.read_table(snap.dataset(S.ITEM_INDEX), [S.ITEM_ID, S.ITEM_IDX]).to_pandas()
    return index.sort_values(S.ITEM_IDX)[S.ITEM_ID].reset_index(drop=True)


def require_columns(path: str, required: dict[str, str]) -> pq.ParquetDataset:
    """The Parquet dataset at `path`, after checking it has each column with its physical type."""
    fs, where = fsio.resolve(path)
    dataset = pq.ParquetDataset(where, filesystem=fs)
    schema = dataset.schema
    for name, kind in required.items():
        if name not in schema.names:
            raise SnapshotError(f"{path} has no column {name!r} "
                                f"(it has {', '.join(schema.names)}): was it written by prepare?")
        got = str(schema.field(name).type)
        if got != kind:
            raise SnapshotError(f"{path}: column {name!r} is {got}, expected {kind}")
    return dataset


def row_groups(dataset: pq.ParquetDataset) -> int:
    """Row groups in a dataset: the unit Petastorm shards training data by."""
    return sum(f.metadata.num_row_groups for f in dataset.fragments)


# --- the id maps a model is bound to ----------------------------------------------------------

def fingerprint(index: DataFrame, key: str, idx: str) -> str:
    """Order-free digest of an id map: a model trained on one map must not score with another."""
    from pyspark.sql import functions as F
    row = index.agg(F.count(F.lit(1)).alias("n"),
                    F.sum(F.pmod(F.xxhash64(F.col(key), F.col(idx)), F.lit(1_000_000_007))).alias("h")
                    ).first()
    return f"{row['n']}:{row['h'] or 0}"


def id_map_digests(spark: SparkSession, snap: Snapshot) -> dict[str, str]:
    """The digests of both id maps, as train records them in the artifact."""
    return {name: fingerprint(spark.read.parquet(snap.dataset(name)), key, idx)
            for name, (key, idx) in ID_MAPS.items()}


def check_id_maps(spark: SparkSession, data: dict[str, Any], version: str) -> None:
    """The ids a model was trained with (its artifact's `data.json`) must be the ids in the
    snapshot it points to."""
    for name, (key, idx) in ID_MAPS.items():
        path = data[name]
        if not fsio.exists(path):
            raise SnapshotError(f"model {version}: its id map {path} is gone "
                                f"(snapshot ds={data['ds']} deleted?): re-train")
        expected = data.get("fingerprints", {}).get(name)
        if expected is None:  # an artifact from before digests were recorded: nothing to compare
            continue
        found = fingerprint(spark.read.parquet(path), key, idx)
        if found != expected:
            raise SnapshotError(
                f"model {version} does not match the data: {path} has changed since "
                f"training (id map digest {found}, the model was trained on {expected}); "
                f"re-train on the current snapshot")
