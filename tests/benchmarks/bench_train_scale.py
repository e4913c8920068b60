"""Benchmark training at scale: does a step cost follow the batch, not the tables?

Writes three synthetic logs (`recsys synth --users --items`), prepares each, then trains each
model for one epoch (no refit) with the configured workers, as a user runs `recsys train`, and
prints per size and model: samples/s per worker, bytes a worker sends per step, data-wait share,
where a step's time goes, epoch seconds, peak RSS per worker, and the ratio of samples/s at the
largest size to the smallest. `--baseline` also trains mf with `optimizer=adam` in place of its own (every
row updated and exchanged every step) at the smallest size, for the sparse/dense ratio of the
same run, and (with `--models ... lightgcn`) lightgcn reading every neighbour (`graph_fanout=null`,
the exact propagation, which at that size reaches the whole graph) against its sampled default. Logs and snapshots are kept under the workdir and reused.

    .venv/bin/python tests/benchmarks/bench_train_scale.py [--models mf neumf two_tower] [--baseline]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from common import REPO, JobFailed, machine, run_job  # this folder is sys.path[0] when run as a script

CONF = os.path.join(REPO, "conf", "synth.yaml")
RECSYS = os.path.join(os.path.dirname(sys.executable), "recsys")
DS = "2026-11-01"
SIZES = {  # name: (events, users, items)
    "25k x 2.5k": (1_000_000, 25_000, 2_500),
    "250k x 25k": (10_000_000, 250_000, 25_000),
    "1M x 100k": (10_000_000, 1_000_000, 100_000),
}
MODELS = ("mf", "neumf", "two_tower")


def snapshot(workdir: str, name: str, events: int, users: int, items: int) -> str:
    """The root of a prepared snapshot of this size, made once and reused."""
    d = os.path.join(workdir, name.replace(" ", ""))
    log, root = os.path.join(d, "log"), os.path.join(d, "root")
    os.makedirs(d, exist_ok=True)
    if not os.path.exists(os.path.join(log, "_synth.json")):
        print(f"  writing {events:,} events over {users:,} users x {items:,} items ...", flush=True)
        run_job([RECSYS, "synth", "--events", str(events), "--users", str(users), "--items", str(items),
                 "--out", log], os.path.join(d, "synth"))
    if not os.path.exists(os.path.join(root, "data", "synth", f"ds={DS}", "_COMPLETE.json")):
        print("  preparing ...", flush=True)
        run_job([RECSYS, "prepare", "--conf", CONF, "--ds", DS, "--set", "dataset=synth",
                 "--set", f"input.path={log}", "--set", f"paths.root={root}"], os.path.join(d, "prepare"))
    return root


def train(root: str, model: str, overrides: list[str], log_base: str) -> dict:
    sets = ["dataset=synth", f"paths.root={root}", "input.path=unused", "train.refit=false",
            "train.epochs=1", f"train.per_model.{model}.epochs=1", *overrides]
    cmd = [RECSYS, "train", "--conf", CONF, "--ds", DS, "--model", model, *(a for s in sets for a in ("--set", s))]
    try:
        job = run_job(cmd, log_base)
    except JobFailed as exc:
        print(f"    {model} failed: {exc}", flush=True)
        return {"model": model, "error": str(exc)}
    summary = job["summary"]
    with open(os.path.join(summary["outputs"]["artifact"], "history.json")) as f:
        h = json.load(f)["epochs"][0]
    workers = summary["counts"]["workers"]
    shares = [round(sum(r[i] for r in h["step_shares_per_rank"]) / workers, 3) for i in range(4)]
    return {"model": model, "train_rows": summary["counts"]["train_rows"], "workers": workers,
            "samples_per_s_per_worker": round(h["samples_per_s"] / workers),
            "bytes_sent_per_step": round(h["bytes_sent_per_step"]), "data_wait_share": h["data_wait_share"],
            "forward_backward_exchange_optimiser": shares, "epoch_s": round(h["seconds"], 1),
            "peak_rss_mb_per_worker": max(h["peak_rss_mb_per_rank"]), "replicas_identical": h["replicas_identical"],
            "optimizer": h["optimizer"], "valid_ndcg@10": h.get("valid_ndcg@10"), "wall_s": job["wall_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=(*MODELS, "lightgcn"))
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--baseline", action="store_true", help="also mf with optimizer=adam at the smallest size")
    ap.add_argument("--workdir", default=os.path.join(REPO, ".bench", "scale"))
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    workdir = os.path.abspath(args.workdir)
    info = machine()
    print(f"machine: {info['cores']} cores, {info['memory_gb']} GB, {info['cpu']}", flush=True)
    results = []
    for size in args.sizes:
        print(f"{size}:", flush=True)
        root = snapshot(workdir, size, *SIZES[size])
        runs = [(m, []) for m in args.models]
        if args.baseline and size == args.sizes[0]:
            runs.append(("mf", ["train.per_model.mf.optimizer=adam"]))  # over mf's own
            if "lightgcn" in args.models:
                runs.append(("lightgcn", ["train.per_model.lightgcn.graph_fanout=null"]))
        for model, extra in runs:
            variant = ("adam" if model == "mf" else "every neighbour") if extra else ""
            label = model + (f" ({variant})" if variant else "")
            print(f"  training {label} ...", flush=True)
            r = train(root, model, [*args.overrides, *extra],
                      os.path.join(workdir, f"train-{size.replace(' ', '')}-{model}"
                                            + (f"-{variant.replace(' ', '-')}" if variant else "")))
            r.update(size=size, label=label)
            results.append(r)
            if "error" not in r:
                print(f"    {r['samples_per_s_per_worker']:,} samples/s per worker, epoch {r['epoch_s']} s", flush=True)

    head = ["size", "model", "rows", "samples/s/worker", "MB sent/step", "data wait", "fwd/bwd/exch/opt",
            "epoch s", "peak RSS MB", "optimizer"]
    rows = [[r["size"], r["label"], "failed", "", "", "", "", "", "", ""] if "error" in r else
            [r["size"], r["label"], f"{r['train_rows']:,}", f"{r['samples_per_s_per_worker']:,}",
             f"{r['bytes_sent_per_step'] / 1e6:.2f}", f"{100 * r['data_wait_share']:.1f}%",
             "/".join(f"{100 * x:.0f}" for x in r["forward_backward_exchange_optimiser"]), f"{r['epoch_s']}",
             f"{r['peak_rss_mb_per_worker']:,}", r["optimizer"]] for r in results]
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows)]
    print("\n" + "  ".join(h.ljust(w) for h, w in zip(head, widths)))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))

    rate = {(r["size"], r["label"]): r["samples_per_s_per_worker"] for r in results if "error" not in r}
    small, large = args.sizes[0], args.sizes[-1]
    print()
    for model in args.models:
        if (small, model) in rate and (large, model) in rate:
            print(f"{model}: samples/s per worker at {large} / at {small} = "
                  f"{rate[(large, model)] / rate[(small, model)]:.2f}")
    for size in args.sizes:
        if (size, "mf") in rate:
            for model in args.models:
                if model != "mf" and (size, model) in rate:
                    print(f"{size}: mf / {model} samples/s = {rate[(size, 'mf')] / rate[(size, model)]:.2f}")
    if (small, "mf") in rate and (small, "mf (adam)") in rate:
        print(f"{small}: mf sparse ({results[0]['optimizer']}) / dense adam samples/s = "
              f"{rate[(small, 'mf')] / rate[(small, 'mf (adam)')]:.2f}")
    if (small, "lightgcn") in rate and (small, "lightgcn (every neighbour)") in rate:
        print(f"{small}: lightgcn sampled / every neighbour samples/s = "
              f"{rate[(small, 'lightgcn')] / rate[(small, 'lightgcn (every neighbour)')]:.2f}")
    path = os.path.join(workdir, "bench_train_scale.json")
    with open(path, "w") as f:
        json.dump({"machine": info, "overrides": args.overrides, "results": results}, f, indent=2)
    print(f"results: {path}")
    if any("error" in r for r in results):
        sys.exit("some training jobs failed: see their logs above")


if __name__ == "__main__":
    main()
