"""`recsys run`: prepare, train, evaluate and score one ds, resuming where a failed night stopped.

Each step's manifest records a fingerprint of what the step depends on: its part of the
configuration, its input files (for prepare) and the fingerprint of the step before it. A step
whose manifest says `completed` with the same fingerprint is skipped, so re-running a night
after a failure starts at the step that failed; changing the config or the log re-runs the step
and everything after it. A failed train resumes from its last checkpoint.
"""
from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from typing import Any, Callable

from pyspark.sql import SparkSession

from recsys.config import Config, resolve_data_path, to_dict
from recsys.manifest import Manifest
from recsys.storage import Storage, join, resolve_root

log = logging.getLogger("recsys.run")
STEPS = ("prepare", "train", "evaluate", "score")
# The configuration sections each step depends on (besides the step before it).
SECTIONS = {"prepare": ("dataset", "input", "users", "items", "prepare", "privacy"),
            "train": ("dataset", "train"), "evaluate": ("evaluate", "score"),
            "score": ("score", "privacy")}


def input_signature(store: Storage, cfg: Config) -> list[Any]:
    """Names, sizes and modification times of the input files: a changed log, or a user added
    to a privacy list, re-runs prepare (and what follows)."""
    sig: list[Any] = []
    for src in (cfg.input, cfg.users, cfg.items, cfg.privacy.erase, cfg.privacy.opt_out):
        if src is None:
            continue
        if src.format == "table":
            sig.append(["table", src.table])
            continue
        sig.append(store.signature(resolve_data_path(src.path)))
    return sig


def fingerprint(step: str, cfg: Config, upstream: str | None, extra: Any = None) -> str:
    tree = to_dict(cfg)
    parts = {"step": step, "config": {k: tree[k] for k in SECTIONS[step]},
             "upstream": upstream, "extra": extra}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_nightly(spark: SparkSession, cfg: Config, ds: str, *, force: bool = False) -> Manifest:
    """Run the four steps for `ds`; returns the run's own manifest (`runs/<ds>/run.json`)."""
    from recsys.evaluation.job import evaluate
    from recsys.prep.pipeline import prepare
    from recsys.score.job import score
    from recsys.train.job import train

    root = resolve_root(cfg.paths.root)
    store = Storage(spark)
    m = Manifest("run", ds, to_dict(cfg))
    upstream = None
    jobs: dict[str, Callable[[bool], Manifest]] = {
        "prepare": lambda resume: prepare(spark, cfg, ds),
        "train": lambda resume: train(spark, cfg, ds, resume=resume),
        "evaluate": lambda resume: evaluate(spark, cfg, ds),
        "score": lambda resume: score(spark, cfg, ds, force=force),
    }
    with m.recorded(lambda data: store.write_json(join(root, "runs", ds, "run.json"), data)):
        for number, step in enumerate(STEPS, 1):
            extra = input_signature(store, cfg) if step == "prepare" else None
            fp = fingerprint(step, cfg, upstream, extra)
            path = join(root, "runs", ds, f"{step}.json")
            previous = store.read_json(path) if store.exists(path) else {}
            same = previous.get("fingerprint") == fp
            if same and previous.get("status") == "completed" and not (step == "score" and force):
                _say(f"[{number}/{len(STEPS)}] {step}: up to date (completed {previous.get('finished_at')}), skipped")
                m.data["counts"][step] = "skipped"
                upstream = fp
                continue
            resume_train = step == "train" and same and previous.get("status") == "failed"
            _say(f"[{number}/{len(STEPS)}] {step}: running" + (" (resuming)" if resume_train else ""))
            started = time.perf_counter()
            try:
                result = jobs[step](resume_train)
            finally:
                # The job wrote its manifest (completed or failed); add what `run` keys on.
                if store.exists(path):
                    data = store.read_json(path)
                    data["fingerprint"] = fp
                    store.write_json(path, data)
            took = time.perf_counter() - started
            _say(f"[{number}/{len(STEPS)}] {step}: done in {took:.0f}s: "
                 f"{json.dumps(result.summary().get('outputs', {}), default=str)[:300]}")
            m.data["counts"][step] = "completed"
            m.data["timings_s"][step] = round(took, 3)
            upstream = fp
        m.data["outputs"] = {step: join(root, "runs", ds, f"{step}.json") for step in STEPS}
    return m
