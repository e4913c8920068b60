"""The partition's Parquet files, written by the Python workers, and how they are committed.

Why: handing 100 rows per user back to the JVM (Arrow -> rows -> Spark's Parquet writer) cost
as much as the scoring itself; pyarrow writes the Arrow batches the scorer already holds
(README, performance). `score.writer: spark` keeps Spark's writer for warehouse locations that
pyarrow cannot open (e.g. abfss://).

The commit protocol is Hadoop's, in small: each task attempt writes one file under the run
directory's `_attempts/` (readers skip names starting with `_`) and returns its name and
counts; the driver moves the files of the attempts Spark accepted into the run directory and
deletes `_attempts/`, so a failed, killed or duplicate attempt's file is never read. Only then
is the run directory made the table's partition (`warehouse.commit_partition`).
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recsys import faults, fsio
from recsys.errors import ConfigError
from recsys.score.reasons import REASONS
from recsys.storage import Storage, join

SOURCES = ("model", "features", "popular", "opted_out")
ATTEMPTS = "_attempts"
ROW_GROUP_ROWS = 1 << 20
# Columns with few distinct values per row group; a score's dictionary would only be thrown away.
DICTIONARY = ["user_id", "item_id", "rank", "source", "model_version", "because_item_id", "reason"]
SUMMARY = pa.schema([("file", pa.string()), ("part", pa.int32()), ("rows", pa.int64()),
                     *[(f"users_{s}", pa.int64()) for s in SOURCES]])
SUMMARY_SCHEMA = "file string, part int, rows long, " + ", ".join(f"users_{s} long" for s in SOURCES)
FILE_SCHEMA = pa.schema([
    ("user_id", pa.string()), ("item_id", pa.string()), ("rank", pa.int32()), ("score", pa.float32()),
    # Constant per batch: dictionary-encoded, a few bytes per row group in the file.
    ("source", pa.dictionary(pa.int8(), pa.string())),
    ("model_version", pa.dictionary(pa.int8(), pa.string())),
    ("because_item_id", pa.string()),
    ("reason", pa.dictionary(pa.int8(), pa.string())),
])


def check_reachable(directory: str) -> None:
    """Fail before scoring when pyarrow cannot open the table's location."""
    try:
        fsio.resolve(directory)
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError by scheme
        raise ConfigError(f"score.writer 'arrow' writes with pyarrow, which cannot open the table "
                          f"location {directory} ({exc}); set score.writer: spark") from None


def _constant(codes: np.ndarray, values: pa.Array) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int8()), values)


def write_task(directory: str, ranked: Iterable[Any], version: str,
               fault: str | None = None) -> Iterator[pa.RecordBatch]:
    """Write `ranked` (scorer.Ranked: source, users, rows) to this task attempt's file under
    `directory/_attempts`; yield one summary row (SUMMARY_SCHEMA)."""
    from pyspark import TaskContext
    ctx = TaskContext.get()
    part, attempt = ctx.partitionId(), ctx.taskAttemptId()
    name = f"part-{part:05d}-{attempt}.parquet"
    fs, path = fsio.resolve(join(directory, ATTEMPTS, name))
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    sources, versions, reasons = pa.array(SOURCES), pa.array([version]), pa.array(REASONS)
    users = dict.fromkeys(SOURCES, 0)
    rows, pending, pending_rows, groups = 0, [], 0, 0
    with fs.open_output_stream(path) as out, pq.ParquetWriter(
            out, FILE_SCHEMA, store_schema=False, use_dictionary=DICTIONARY) as file:
        def flush() -> None:
            nonlocal pending, pending_rows, groups
            if pending:
                file.write_table(pa.Table.from_batches(pending, FILE_SCHEMA), row_group_size=pending_rows)
                pending, pending_rows, groups = [], 0, groups + 1
                faults.maybe_fail("write_file", fault, part=part, groups=groups)

        for source, n_users, batch in ranked:
            n = batch.num_rows
            users[source] += n_users
            rows += n
            pending.append(pa.RecordBatch.from_arrays([
                *batch.columns[:4],
                _constant(np.full(n, SOURCES.index(source), np.int8), sources),
                _constant(np.zeros(n, np.int8), versions),
                batch.column("because_item_id"),
                pa.DictionaryArray.from_arrays(batch.column("reason_code"), reasons)], schema=FILE_SCHEMA))
            pending_rows += n
            if pending_rows >= ROW_GROUP_ROWS:
                flush()
        flush()
    yield pa.RecordBatch.from_pylist(
        [{"file": name, "part": part, "rows": rows, **{f"users_{s}": users[s] for s in SOURCES}}],
        schema=SUMMARY)


def commit_files(store: Storage, directory: str, summaries: list[Any]) -> dict[str, Any]:
    """Move the accepted attempts' files (one summary per task) into `directory` as
    `part-NNNNN.parquet` and delete every other attempt's; rows and users per source."""
    parts = [s["part"] for s in summaries]
    if len(parts) != len(set(parts)):
        raise RuntimeError(f"two accepted attempts for one task in {directory}: {sorted(parts)}")
    for s in summaries:
        store.rename(join(directory, ATTEMPTS, s["file"]), join(directory, f"part-{s['part']:05d}.parquet"))
    store.delete(join(directory, ATTEMPTS))
    return {"files": len(summaries), "rows": sum(s["rows"] for s in summaries),
            "users_by_source": {src: n for src in SOURCES
                                if (n := sum(s[f"users_{src}"] for s in summaries))}}
