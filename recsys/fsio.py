"""Files for the PyTorch side (training workers, model artifacts) through pyarrow's filesystems.

The Spark side uses `recsys.storage` (Hadoop's FileSystem in the JVM); torch workers have no
JVM, so they read and write with pyarrow, which knows local paths, file://, hdfs:// and s3://.
Small files are written to a temporary name and moved into place, so readers never see a part.
"""
from __future__ import annotations

import os
import uuid

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq


# Hadoop's names for the S3 connector; pyarrow's S3 filesystem reads the same buckets.
_SCHEMES = {"s3a": "s3", "s3n": "s3"}


def resolve(path: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a plain path or a URI, including the forms the JVM
    prints (`file:/a/b`, `s3a://bucket/key`)."""
    scheme = path.split(":", 1)[0] if ":" in path else ""
    if scheme in _SCHEMES:
        path = _SCHEMES[scheme] + path[len(scheme):]
    if "://" in path or scheme == "file":
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), os.path.abspath(path)


def url(path: str) -> str:
    """A URL Petastorm accepts: file:///abs/path for local paths, URIs unchanged."""
    return path if "://" in path else "file://" + os.path.abspath(path)


def exists(path: str) -> bool:
    fs, p = resolve(path)
    return fs.get_file_info(p).type != pafs.FileType.NotFound


def makedirs(path: str) -> None:
    fs, p = resolve(path)
    fs.create_dir(p, recursive=True)


def delete_dir(path: str) -> None:
    fs, p = resolve(path)
    if fs.get_file_info(p).type != pafs.FileType.NotFound:
        fs.delete_dir(p)


def delete_file(path: str) -> None:
    fs, p = resolve(path)
    if fs.get_file_info(p).type != pafs.FileType.NotFound:
        fs.delete_file(p)


def listdir(path: str) -> list[str]:
    fs, p = resolve(path)
    if fs.get_file_info(p).type == pafs.FileType.NotFound:
        return []
    return sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector(p)))


def read_table(path: str, columns: list[str] | None = None) -> pa.Table:
    """A Parquet file or folder (Spark's `_SUCCESS` and other `_`/`.` names skipped)."""
    fs, p = resolve(path)
    return pq.read_table(p, columns=columns, filesystem=fs)


def read_bytes(path: str) -> bytes:
    fs, p = resolve(path)
    with fs.open_input_stream(p) as fh:
        return fh.read()


def write_bytes(path: str, data: bytes) -> None:
    """Atomic replace: write a temporary sibling, then move it over `path`."""
    fs, p = resolve(path)
    fs.create_dir(os.path.dirname(p), recursive=True)
    tmp = f"{p}.tmp-{uuid.uuid4().hex[:8]}"
    with fs.open_output_stream(tmp) as fh:
        fh.write(data)
    fs.move(tmp, p)


def move(src: str, dst: str) -> None:
    fs, s = resolve(src)
    _, d = resolve(dst)
    fs.move(s, d)
