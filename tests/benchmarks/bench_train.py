"""Benchmark training: samples/s per model, data wait, and the Petastorm reader against raw Parquet.

On a prepared snapshot of a 1M-event synthetic log (the one `make bench-prepare` leaves, else a
new one): first the reader alone, in this process, on the snapshot's `train` files, best of 3:
`pyarrow.parquet.read_table` of the training columns, then the project's `open_shard` (one
shard, one Petastorm thread) iterated to the end, and the same piped through `rebatch` as the
training loop consumes it. Then `recsys train` per model, as a user runs it (a subprocess, the
configured 2 DDP workers), with samples/s, data-wait share and epoch seconds from the
artifact's history.json. The goal: data wait under 10% of step time for every model.
`--bakeoff` instead runs the night's bake-off (`recsys train` with no model: every candidate of
`train.candidates`, then the blends on validation) with `--epochs` per candidate and no refit,
and prints each candidate's seconds and seconds per epoch: what a bake-off costs at this size.

    .venv/bin/python benchmarks/bench_train.py [--root .bench/prepare/root-1000000] [--epochs 1]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np
import pyarrow.parquet as pq

from common import REPO, JobFailed, machine, run_job  # this folder is sys.path[0] when run as a script
from recsys import fsio
from recsys.config import load_config
from recsys.train.reader import open_shard, rebatch
from recsys.train.tasks import PairTask

CONF = os.path.join(REPO, "conf", "synth.yaml")
RECSYS = os.path.join(os.path.dirname(sys.executable), "recsys")
MODELS = ("mf", "neumf", "two_tower")
GOAL = 0.10
REPEATS = 3


def run(cmd: list[str], log_base: str) -> tuple[float, dict]:
    """A recsys job: (wall seconds, its last-line JSON summary); JobFailed if it fails."""
    job = run_job(cmd, log_base)
    return job["wall_s"], job["summary"]


def snapshot(root: str | None, dataset: str, ds: str, workdir: str) -> str:
    """The root holding a complete snapshot `ds`: the given one, else one made here."""
    marker = lambda r: os.path.join(r, "data", dataset, f"ds={ds}", "_COMPLETE.json")  # noqa: E731
    if root and os.path.exists(marker(root)):
        return root
    if root:
        sys.exit(f"no complete snapshot ds={ds} of {dataset!r} under {root}")
    root, log = os.path.join(workdir, "root"), os.path.join(workdir, "log")
    if not os.path.exists(marker(root)):
        print(f"no snapshot: writing a 1,000,000-event log and preparing it in {workdir} ...", flush=True)
        if not os.path.exists(os.path.join(log, "_synth.json")):
            run([RECSYS, "synth", "--events", "1000000", "--out", log], os.path.join(workdir, "synth"))
        run([RECSYS, "prepare", "--conf", CONF, "--ds", ds, "--set", f"dataset={dataset}",
             "--set", f"input.path={log}", "--set", f"paths.root={root}"], os.path.join(workdir, "prepare"))
    return root


def best_of(fn) -> tuple[int, float]:
    """(rows, best seconds) over REPEATS calls of `fn`, which returns the rows it read."""
    times, rows = [], 0
    for _ in range(REPEATS):
        t = time.perf_counter()
        rows = fn()
        times.append(time.perf_counter() - t)
    return rows, min(times)


def bench_reader(train_dir: str, batch: int, buffer: int) -> dict:
    fs, where = fsio.resolve(train_dir)
    url = fsio.url(train_dir)

    def raw() -> int:
        return pq.read_table(where, columns=PairTask.columns, filesystem=fs).num_rows

    def groups(shuffle: bool) -> int:
        with open_shard(url, PairTask.columns, shard=0, shards=1, seed=0, workers=1) as it:
            it = rebatch(it, batch, buffer, np.random.default_rng(0)) if shuffle else it
            return sum(len(b[PairTask.columns[0]]) for b in it)

    out = {}
    for name, fn in (("raw_parquet", raw), ("petastorm", lambda: groups(False)),
                     ("petastorm_rebatch", lambda: groups(True))):
        rows, secs = best_of(fn)
        out[name] = {"rows": rows, "seconds": round(secs, 3), "rows_per_s": round(rows / secs)}
    for name in ("petastorm", "petastorm_rebatch"):
        out[name]["fraction_of_raw"] = round(out[name]["rows_per_s"] / out["raw_parquet"]["rows_per_s"], 3)
    return out


def bench_model(model: str, root: str, dataset: str, ds: str, epochs: int, workdir: str,
                overrides: list[str]) -> dict:
    cmd = [RECSYS, "train", "--conf", CONF, "--ds", ds, "--model", model, "--set", f"dataset={dataset}",
           "--set", f"paths.root={root}", *(a for o in overrides for a in ("--set", o)),
           "--set", f"train.epochs={epochs}", "--set", "input.path=unused"]
    try:
        wall, summary = run(cmd, os.path.join(workdir, f"train-{model}"))
    except JobFailed as exc:
        print(f"  {model} failed: {exc}", flush=True)
        return {"model": model, "error": str(exc)}
    with open(os.path.join(summary["outputs"]["artifact"], "history.json")) as f:
        hist = json.load(f)["epochs"]
    return {"model": model, "wall_s": round(wall, 1), "train_rows": summary["counts"]["train_rows"],
            "artifact": summary["outputs"]["artifact"],
            "samples_per_s": round(float(np.mean([h["samples_per_s"] for h in hist]))),
            "data_wait_share": max(h["data_wait_share"] for h in hist),
            "epoch_s": round(float(np.mean([h["seconds"] for h in hist])), 1),
            "epochs": [{k: h[k] for k in ("epoch", "rows", "rows_per_rank", "steps_per_rank", "samples_per_s",
                                           "data_wait_share", "seconds")} for h in hist]}


def bench_bakeoff(root: str, dataset: str, ds: str, epochs: int, workdir: str, overrides: list[str]) -> dict:
    """The night's bake-off at `epochs` epochs per candidate: seconds per candidate and in all."""
    cands = load_config(CONF, [f"dataset={dataset}", *overrides]).train.candidates
    per_model = [f"train.per_model.{m}.epochs={epochs}" for m in cands]
    sets = [f"dataset={dataset}", f"paths.root={root}", "input.path=unused", f"train.epochs={epochs}",
            "train.refit=false", *per_model, *overrides]
    cmd = [RECSYS, "train", "--conf", CONF, "--ds", ds, *(a for o in sets for a in ("--set", o))]
    wall, _ = run(cmd, os.path.join(workdir, "bakeoff"))
    with open(os.path.join(root, "runs", ds, "train.json")) as f:
        manifest = json.load(f)
    board = manifest.get("leaderboard") or []
    rows = []
    for r in board:
        if "train_s" in r:
            rows.append({"name": r["name"], "train_s": r["train_s"], "ndcg@10": r.get("ndcg@10")})
        elif "skipped" in r:
            rows.append({"name": r["name"], "skipped": r["skipped"]})
    return {"wall_s": round(wall, 1), "epochs": epochs, "candidates": rows,
            "blends": sum(1 for r in board if r.get("model") == "blend"),
            "winner": manifest.get("outputs", {}).get("model")}


def table(head: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows)]
    print("\n" + "  ".join(h.rjust(w) for h, w in zip(head, widths)))
    for row in rows:
        print("  ".join(str(c).rjust(w) for c, w in zip(row, widths)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", help="a root with a prepared snapshot (default: bench-prepare's 1M, "
                                   "else one made in the workdir)")
    ap.add_argument("--dataset", default="synth")
    ap.add_argument("--ds", default="2026-11-01")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--bakeoff", action="store_true", help="time the night's bake-off instead")
    ap.add_argument("--workdir", default=os.path.join(REPO, ".bench", "train"))
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="passed on to every `recsys train` (e.g. train.reader_workers=2)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)  # Petastorm on pyarrow 14, as in loop.py
    workdir = os.path.abspath(args.workdir)
    os.makedirs(workdir, exist_ok=True)
    default_root = os.path.join(REPO, ".bench", "prepare", "root-1000000")
    root = snapshot(os.path.abspath(args.root) if args.root else
                    default_root if os.path.exists(default_root) else None, args.dataset, args.ds, workdir)
    t = load_config(CONF, [f"dataset={args.dataset}", *args.overrides]).train
    info = machine()
    print(f"machine: {info['cores']} cores, {info['memory_gb']} GB, {info['cpu']}")
    print(f"snapshot: {root} ({args.dataset}, ds={args.ds}); {t.num_processes} workers, "
          f"batch {t.batch_size}, shuffle buffer {t.shuffle_buffer}, {args.epochs} epoch(s)"
          + (f"; --set {' '.join(args.overrides)}" if args.overrides else ""), flush=True)

    if args.bakeoff:
        out = bench_bakeoff(root, args.dataset, args.ds, args.epochs, workdir, args.overrides)
        print(f"\nbake-off, {args.epochs} epoch(s) per candidate, no refit: {out['wall_s']:.0f} s in all "
              f"(the job, JVM start included), {out['blends']} blends measured")
        for r in out["candidates"]:
            print(f"  {r['name']:<10} " + (f"{r['train_s']:>8.1f} s" if "train_s" in r else f"skipped: {r['skipped']}"))
        with open(os.path.join(workdir, "bench_bakeoff.json"), "w") as f:
            json.dump({"machine": info, "root": root, **out}, f, indent=2)
        return

    train_dir = os.path.join(root, "data", args.dataset, f"ds={args.ds}", "train")
    reader = bench_reader(train_dir, t.batch_size, t.shuffle_buffer)
    print(f"\nreader alone, {reader['raw_parquet']['rows']:,} rows, best of {REPEATS}:")
    for name, label in (("raw_parquet", "pyarrow.parquet.read_table"),
                        ("petastorm", "open_shard (Petastorm, 1 thread)"),
                        ("petastorm_rebatch", f"open_shard + rebatch({t.batch_size})")):
        r = reader[name]
        frac = f"  {r['fraction_of_raw']:.1%} of raw" if "fraction_of_raw" in r else ""
        print(f"  {label:36s} {r['rows_per_s']:>12,} rows/s  ({r['seconds']:.3f}s){frac}", flush=True)

    results = []
    for model in args.models:
        print(f"training {model} ...", flush=True)
        results.append(bench_model(model, root, args.dataset, args.ds, args.epochs, workdir, args.overrides))
    for r in results:
        r["verdict"] = "FAIL" if "error" in r or r["data_wait_share"] >= GOAL else "PASS"
    table(["model", "train rows", "samples/s", "data wait %", "epoch s", "wall s", f"wait < {GOAL:.0%}"],
          [[r["model"], "job failed", "-", "-", "-", "-", "FAIL"] if "error" in r else
           [r["model"], f"{r['train_rows']:,}", f"{r['samples_per_s']:,}", f"{100 * r['data_wait_share']:.1f}",
            f"{r['epoch_s']:.1f}", f"{r['wall_s']:.1f}", r["verdict"]] for r in results])

    verdict = "PASS" if all(r["verdict"] == "PASS" for r in results) else "FAIL"
    print(f"\ndata wait under {GOAL:.0%} of step time for every model: {verdict}")
    report = {"machine": info, "root": root, "dataset": args.dataset, "ds": args.ds, "epochs": args.epochs,
              "overrides": args.overrides, "num_processes": t.num_processes, "batch_size": t.batch_size,
              "shuffle_buffer": t.shuffle_buffer, "reader": reader, "models": results,
              "goal_data_wait": GOAL, "verdict": verdict}
    path = os.path.join(workdir, "bench_train.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    print(f"results: {path}")
    if any("error" in r for r in results):
        sys.exit("some training jobs failed: see their logs above")


if __name__ == "__main__":
    main()
