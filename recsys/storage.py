"""Files under `paths.root` through Hadoop's FileSystem, so local paths, hdfs:// and s3a:// behave alike.

Publishing is by rename: a job writes into a staging directory and renames it into place only
when everything in it is complete, so the next job never sees a half-written snapshot.
"""
from __future__ import annotations

import json
import os
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the path helpers are used where no Spark runs (workers, models)
    from pyspark.sql import SparkSession


def resolve_root(root: str) -> str:
    """A URI stays as it is; a plain path becomes absolute (Derby and Hadoop both need that)."""
    return root if "://" in root else os.path.abspath(root)


def is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def local_path(path: str) -> str:
    return path[len("file://"):] if path.startswith("file://") else path


def join(*parts: str) -> str:
    return "/".join(p.rstrip("/") for p in parts)


def normal_path(path: str) -> str:
    """One spelling per local place: `file:/a/b/`, `file:///a/b` and `/a/b` give `/a/b`."""
    for prefix in ("file://", "file:"):
        if path.startswith(prefix):
            path = path[len(prefix):]
            break
    return "/" + path.strip("/")


class Storage:
    """Thin wrapper over the JVM's Hadoop FileSystem for one session."""

    def __init__(self, spark: SparkSession):
        self._jvm = spark.sparkContext._jvm
        self._conf = spark.sparkContext._jsc.hadoopConfiguration()

    def _fs(self, path: str):
        p = self._jvm.org.apache.hadoop.fs.Path(path)
        return p.getFileSystem(self._conf), p

    def exists(self, path: str) -> bool:
        fs, p = self._fs(path)
        return bool(fs.exists(p))

    def delete(self, path: str) -> None:
        fs, p = self._fs(path)
        if fs.exists(p):
            fs.delete(p, True)

    def mkdirs(self, path: str) -> None:
        fs, p = self._fs(path)
        fs.mkdirs(p)

    def rename(self, src: str, dst: str) -> None:
        fs, s = self._fs(src)
        _, d = self._fs(dst)
        if not fs.rename(s, d):
            raise OSError(f"could not rename {src} to {dst}")

    def list(self, path: str) -> list[str]:
        """Names directly under `path` (empty if it does not exist)."""
        fs, p = self._fs(path)
        if not fs.exists(p):
            return []
        return sorted(str(s.getPath().getName()) for s in fs.listStatus(p))

    def signature(self, path: str) -> list[list[Any]]:
        """[name, size, modification time] of every file under `path` (or of the file)."""
        fs, p = self._fs(path)
        if not fs.exists(p):
            return [[path, None, None]]
        found = []
        files = fs.listFiles(p, True)
        while files.hasNext():
            status = files.next()
            found.append([str(status.getPath()), int(status.getLen()), int(status.getModificationTime())])
        return sorted(found)

    def write_text(self, path: str, text: str) -> None:
        """Write a small file so that readers see the old or the new content, never a part."""
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        fs, p = self._fs(tmp)
        out = fs.create(p, True)
        try:
            out.write(bytearray(text.encode("utf-8")))
        finally:
            out.close()
        self.delete(path)
        self.rename(tmp, path)

    def read_text(self, path: str) -> str:
        fs, p = self._fs(path)
        stream = fs.open(p)
        try:
            reader = self._jvm.java.io.BufferedReader(
                self._jvm.java.io.InputStreamReader(stream, "UTF-8"))
            lines = []
            line = reader.readLine()
            while line is not None:
                lines.append(line)
                line = reader.readLine()
            return "\n".join(lines)
        finally:
            stream.close()

    def write_json(self, path: str, data: Any) -> None:
        self.write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")

    def read_json(self, path: str) -> Any:
        return json.loads(self.read_text(path))

    def publish(self, staging: str, final: str) -> None:
        """Replace `final` by the complete directory `staging`.

        The old snapshot is moved aside first and deleted only once the new one is in place;
        if the second rename fails the old one is put back.
        """
        parent = final.rsplit("/", 1)[0]
        self.mkdirs(parent)
        old = None
        if self.exists(final):
            old = f"{final}.replaced-{uuid.uuid4().hex[:8]}"
            self.rename(final, old)
        try:
            self.rename(staging, final)
        except Exception:
            if old is not None:
                self.rename(old, final)
            raise
        if old is not None:
            self.delete(old)
