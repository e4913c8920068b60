"""Fault injection for the failure tests: `RECSYS_FAULT=point[:key=value...][:exit]`.

A named point in the code calls `maybe_fail(point, **where)`; when the variable names that
point and every key=value matches, the process raises (or, with `:exit`, dies at once, as a
killed worker would). Unset, it costs one dictionary lookup.
"""
from __future__ import annotations

import os

VARIABLE = "RECSYS_FAULT"


def current() -> str | None:
    """The fault asked for in this process (the driver hands it to executors explicitly:
    Spark's Python workers are forked from a daemon that may predate the variable)."""
    return os.environ.get(VARIABLE)


def maybe_fail(point: str, spec: str | None = None, **where: object) -> None:
    spec = spec if spec is not None else current()
    if not spec:
        return
    name, *parts = spec.split(":")
    if name != point:
        return
    hard = "exit" in parts
    wanted = dict(p.split("=", 1) for p in parts if "=" in p)
    if all(str(where.get(k)) == v for k, v in wanted.items()):
        if hard:
            os._exit(137)
        raise RuntimeError(f"injected fault at {point} ({spec})")
