"""Benchmark `recsys prepare` on synthetic logs of growing size.

For each --events N: write (or reuse) a synthetic CSV log, run the prepare job as a user would,
in a subprocess, and record its wall time, peak memory (summed RSS of the job and its JVM,
sampled every 0.2 s) and the stage timings of its manifest. The goal is near-linear scaling:
cost per event at the largest size at most 1.3x the cost at the smallest.

    .venv/bin/python benchmarks/bench_prepare.py --events 1000000 10000000
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time


from common import REPO, JobFailed, machine, run_job  # this folder is sys.path[0]
from recsys.synth import SynthSpec, generate

DS = "2026-11-01"
GOAL = 1.3
STAGES = ("validate", "rejects", "clean", "index", "split", "write", "publish", "total")


def synth_log(n: int, workdir: str) -> dict:
    """The log for `n` events, regenerated only when `_synth.json` does not match the spec."""
    spec, out = SynthSpec(events=n, seed=0), os.path.join(workdir, f"log-{n}")
    try:
        with open(os.path.join(out, "_synth.json")) as f:
            meta = json.load(f)
        if meta["spec"] == dataclasses.asdict(spec.resolved()) and meta["format"] == "csv":
            return {**meta, "path": out, "generated_s": 0.0}
    except (OSError, ValueError, KeyError):
        pass
    t = time.perf_counter()
    meta = generate(spec, out)
    return {**meta, "path": out, "generated_s": round(time.perf_counter() - t, 1)}


def run_prepare(log_dir: str, root: str, driver_memory: str | None) -> dict:
    """Run the job in a fresh root; return wall seconds, peak RSS, summary and manifest."""
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    cmd = [os.path.join(os.path.dirname(sys.executable), "recsys"), "prepare",
           "--conf", "conf/synth.yaml", "--ds", DS,
           "--set", f"input.path={log_dir}", "--set", f"paths.root={root}"]
    if driver_memory:
        cmd += ["--set", f"spark.driver_memory={driver_memory}"]
    try:
        run = run_job(cmd, os.path.join(root, "prepare"))
    except JobFailed as exc:
        sys.exit(f"prepare failed: {exc}")
    with open(os.path.join(root, "runs", DS, "prepare.json")) as f:
        manifest = json.load(f)
    return {"wall_s": run["wall_s"], "peak_rss_gb": run["peak_rss_gb"],
            "counts": run["summary"]["counts"], "timings_s": manifest["timings_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--workdir", default=os.path.join(REPO, ".bench", "prepare"))
    ap.add_argument("--driver-memory", help="spark.driver_memory (default: the config's)")
    args = ap.parse_args()
    workdir = os.path.abspath(args.workdir)
    info = machine()
    print(f"machine: {info['cores']} cores, {info['memory_gb']} GB, {info['cpu']}")
    print(f"spark.driver_memory: {args.driver_memory or 'config default'}", flush=True)

    results = []
    for n in sorted(args.events):
        log = synth_log(n, workdir)
        print(f"{n:,} events: log {log['rows']:,} rows (generated in {log['generated_s']}s), "
              "running prepare ...", flush=True)
        r = run_prepare(log["path"], os.path.join(workdir, f"root-{n}"), args.driver_memory)
        results.append({"events": n, "log_rows": log["rows"], **r,
                        "events_per_s": round(n / r["wall_s"]), "us_per_event": r["wall_s"] / n * 1e6})

    seen = {s for r in results for s in r["timings_s"]}  # the manifest's keys come sorted
    stages = [s for s in STAGES if s in seen] + sorted(seen - set(STAGES))
    head = ["events", "log rows", "wall s", "events/s", "µs/event", "peak GB", *stages]
    rows = [[f"{r['events']:,}", f"{r['log_rows']:,}", f"{r['wall_s']:.1f}",
             f"{r['events_per_s']:,}", f"{r['us_per_event']:.2f}", f"{r['peak_rss_gb']:.2f}",
             *(f"{r['timings_s'].get(s, 0):.1f}" for s in stages)] for r in results]
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows)]
    print("\n" + "  ".join(h.rjust(w) for h, w in zip(head, widths)))
    for row in rows:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))

    ratio = results[-1]["us_per_event"] / results[0]["us_per_event"]
    verdict = "PASS" if ratio <= GOAL else "FAIL"
    print(f"\ncost per event, {results[-1]['events']:,} vs {results[0]['events']:,}: "
          f"{ratio:.2f}x (goal <= {GOAL}): {verdict}")
    report = {"machine": info, "driver_memory": args.driver_memory, "results": results,
              "ratio": round(ratio, 3), "goal": GOAL, "verdict": verdict}
    with open(os.path.join(workdir, "bench_prepare.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(f"results: {os.path.join(workdir, 'bench_prepare.json')}")


if __name__ == "__main__":
    main()
