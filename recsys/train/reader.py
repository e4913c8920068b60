"""The one module that knows Petastorm: a worker's shard of a Parquet dataset as NumPy batches.

Petastorm shards by row group (`cur_shard` = rank, `shard_count` = world size) and shuffles
row-group order; a shuffle buffer here then mixes rows across row groups before cutting
fixed-size batches, all with NumPy array operations, no per-row Python.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Iterator

import numpy as np

from recsys import fsio

with warnings.catch_warnings():  # pyarrow 14's legacy API, used on purpose (see DESIGN.md)
    warnings.simplefilter("ignore")
    from petastorm import make_batch_reader

Batch = dict[str, np.ndarray]


@contextmanager
def open_shard(url: str | list[str], columns: list[str], *, shard: int, shards: int, seed: int,
               workers: int = 1) -> Iterator[Iterator[Batch]]:
    """Row groups of shard `shard` of `shards`, once, in an order fixed by `seed`.

    Yields an iterator of column dicts (one per row group); the reader is stopped on exit.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reader = make_batch_reader(
            url, schema_fields=columns, reader_pool_type="thread", workers_count=workers,
            shuffle_row_groups=True, seed=seed, num_epochs=1,
            cur_shard=shard if shards > 1 else None, shard_count=shards if shards > 1 else None)
    try:
        yield ({c: np.asarray(getattr(group, c)) for c in columns} for group in reader)
    finally:
        reader.stop()
        reader.join()


def parquet_files(url: str) -> list[str]:
    """The Parquet files of a dataset directory, as URLs (Spark's `_SUCCESS` and hidden files
    left out)."""
    names = [n for n in fsio.listdir(url) if n.endswith(".parquet") and not n.startswith(("_", "."))]
    return [f"{url.rstrip('/')}/{n}" for n in names]


@contextmanager
def open_shards(urls: list[str], columns: list[str], *, shard: int, shards: int, seed: int,
                workers: int = 1) -> Iterator[Iterator[Batch]]:
    """`open_shard` over one dataset or several with the same columns (e.g. train and valid
    for a refit): Petastorm takes a list of files, so the row groups of all of them are
    shuffled and sharded together."""
    target = urls[0] if len(urls) == 1 else [f for url in urls for f in parquet_files(url)]
    with open_shard(target, columns, shard=shard, shards=shards, seed=seed, workers=workers) as groups:
        yield groups


def _take(batch: Batch, idx) -> Batch:
    return {c: v[idx] for c, v in batch.items()}


def rebatch(groups: Iterator[Batch], batch_size: int, buffer_rows: int,
            rng: np.random.Generator) -> Iterator[Batch]:
    """Mix rows through a shuffle buffer of about `buffer_rows` and cut `batch_size` batches.

    Every row comes out exactly once; only the last batch may be smaller.
    """
    buf: Batch | None = None
    for group in groups:
        buf = group if buf is None else {c: np.concatenate([buf[c], group[c]]) for c in buf}
        n = len(next(iter(buf.values())))
        if n < buffer_rows:
            continue
        buf = _take(buf, rng.permutation(n))
        emit = (n - buffer_rows // 2) // batch_size * batch_size  # keep half to mix with the next
        for start in range(0, emit, batch_size):
            yield _take(buf, slice(start, start + batch_size))
        buf = _take(buf, slice(emit, n))
    if buf is not None:
        n = len(next(iter(buf.values())))
        buf = _take(buf, rng.permutation(n))
        for start in range(0, n, batch_size):
            yield _take(buf, slice(start, start + batch_size))
