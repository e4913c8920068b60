"""Benchmark `recsys score` against Spark MLlib ALS and a single-process torch limit.

Builds a fake prepared snapshot (NumPy + pyarrow: 10 train + 1 valid item per user) and an `mf`
artifact with random factors (std 0.1), then in one run measures users/s of
  1. the score job as a user runs it (subprocess; table written; peak RSS of the process tree
     sampled every 0.2 s), 3 runs, the median reported: the job's own users/s (its manifest:
     id-map check, publish gate, plan, scoring, writing, publishing), the scoring + writing
     stage alone, and wall time including the interpreter and JVM start;
  2. the same job once with `score.writer=spark` (Spark's Parquet writer instead of pyarrow's);
  3. ALS `recommendForAllUsers(N)` over the same factors, written to Parquet (local[*], 4g;
     ALS does not exclude seen items, the score job does);
  4. torch in one process, 2 threads: batches of 1024 users, matmul + torch.topk (no
     exclusion), best of 3 passes: the issue's limit; and the same with the job's own two-level
     top_k (recsys.score.topn), the limit of the algorithm the job runs.
Goals, on the job's users/s: >= 5x ALS and >= 0.5x torch. `--large` runs only the score job
(once) at 1M x 100k and compares its cost per user x item with the default run's JSON.
`--blend` scores, in one run, two `mf` artifacts alone and a blend of the two (per-user
standardised scores, the night's blend artifact): goal, the blend's scoring stage costs no
more than the sum of its members'. `--reasons` runs the job with and without `score.reasons`
(interleaved): goal, the scoring + writing stage with reasons <= 1.3x the stage without.

    .venv/bin/python tests/benchmarks/bench_score.py [--users 200000 --items 20000] [--large]
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import shutil
import statistics
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from common import REPO, JobFailed, machine, run_job  # this folder is sys.path[0]
from recsys.artifacts import new_version, publish
from recsys.config import load_config
from recsys.ranking.topk import top_k

DS, DATASET, TRAIN_PER_USER = "2026-11-01", "bench", 10
GOAL_ALS, GOAL_TORCH, GOAL_REASONS = 5.0, 0.5, 1.3


def write(table: pa.Table, path: str, rows_per_file: int = 2_000_000) -> None:
    os.makedirs(path, exist_ok=True)
    for i, start in enumerate(range(0, max(table.num_rows, 1), rows_per_file)):
        pq.write_table(table.slice(start, rows_per_file), os.path.join(path, f"part-{i:05d}.parquet"))


def ids(prefix: str, n: int) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pc.cast(pa.array(np.arange(n)), pa.string()), "")


def build_snapshot(root: str, n_users: int, n_items: int, rng: np.random.Generator) -> tuple[str, dict]:
    """A snapshot like prepare's: 11 distinct items per user (base + j*step mod n_items)."""
    snap = os.path.join(root, "data", DATASET, f"ds={DS}")
    k = TRAIN_PER_USER + 1
    base = rng.integers(0, n_items, n_users)
    step = rng.integers(1, max(2, (n_items - 1) // TRAIN_PER_USER + 1), n_users)
    items = ((base[:, None] + np.arange(k)[None] * step[:, None]) % n_items).astype(np.int32)
    ref = np.datetime64("2026-10-31T00:00:00", "us").astype(np.int64)
    ts = ref - rng.integers(0, 365 * 86_400 * 10**6, (n_users, k))
    users = np.repeat(np.arange(n_users, dtype=np.int32), k).reshape(n_users, k)

    def pairs(cols: slice) -> pa.Table:
        u, i, t = users[:, cols].ravel(), items[:, cols].ravel(), ts[:, cols].ravel()
        return pa.table({"user_idx": u, "item_idx": i, "ts": pa.array(t, pa.timestamp("us", "UTC")),
                         "weight": np.ones(len(u), np.float32)})

    train, valid = pairs(slice(0, TRAIN_PER_USER)), pairs(slice(TRAIN_PER_USER, k))
    recency = ((ref - ts[:, :TRAIN_PER_USER].max(1)) / 86_400e6).astype(np.float32)
    popularity = np.bincount(items[:, :TRAIN_PER_USER].ravel(), minlength=n_items).astype(np.int32)
    tables = {
        "train": train, "valid": valid,
        "user_index": pa.table({"user_id": ids("u", n_users), "user_idx": np.arange(n_users, dtype=np.int32)}),
        "item_index": pa.table({"item_id": ids("i", n_items), "item_idx": np.arange(n_items, dtype=np.int32)}),
        "users": pa.table({"user_idx": np.arange(n_users, dtype=np.int32),
                           "n_train": np.full(n_users, TRAIN_PER_USER, np.int32), "recency_days": recency}),
        "items": pa.table({"item_idx": np.arange(n_items, dtype=np.int32), "popularity": popularity}),
        "rejects": pa.table({"raw": pa.array([], pa.string()), "reason": pa.array([], pa.string())}),
    }
    for name, table in tables.items():
        write(table, os.path.join(snap, name))
    rows = {name: t.num_rows for name, t in tables.items()}
    with open(os.path.join(snap, "_COMPLETE.json"), "w") as f:
        json.dump({"ds": DS, "rows": rows, "snapshot_time": "2026-10-31T00:00:00+00:00"}, f)
    return snap, rows


def local_spark():
    """A local session for the untimed Spark work of the benchmark (id-map digests, ALS)."""
    from pyspark.sql import SparkSession
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = (SparkSession.builder.master("local[*]").appName("bench-score").config("spark.driver.memory", "4g")
             .config("spark.sql.shuffle.partitions", "8").config("spark.ui.showConsoleProgress", "false")
             .getOrCreate())
    spark.sparkContext.setLogLevel("WARN")
    return spark


def id_map_digests(snap: str) -> dict:
    """The id-map digests train records, so the score job's check compares them as it does
    for a trained model."""
    from recsys.snapshot import fingerprint
    spark = local_spark()
    digests = {name: fingerprint(spark.read.parquet(os.path.join(snap, name)), key, idx)
               for name, key, idx in (("user_index", "user_id", "user_idx"), ("item_index", "item_id", "item_idx"))}
    spark.stop()
    return digests


def build_artifact(root: str, snap: str, rows: dict, rank: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An `mf` artifact as train publishes it, id-map digests included (metrics are
    placeholders that pass the publish gate, the factors being random)."""
    g = torch.Generator().manual_seed(seed)
    n_users, n_items = rows["user_index"], rows["item_index"]
    user = torch.randn(n_users, rank, generator=g) * 0.1
    item = torch.randn(n_items, rank, generator=g) * 0.1
    buf = io.BytesIO()
    torch.save({"user.weight": user, "item.weight": item, "item_bias.weight": torch.zeros(n_items, 1)}, buf)
    cfg = load_config(os.path.join(REPO, "conf", "default.yaml"), ["input.path=unused"])
    train = {**dataclasses.asdict(cfg.train), "model": "mf", "dim": rank}
    spec = {"model": "mf", "n_users": n_users, "n_items": n_items, "dim": rank, "hidden": list(train["hidden"]),
            "dropout": train["dropout"], "id_dropout": train["id_dropout"], "temperature": train["temperature"]}
    metrics = {"model": "mf", "best_epoch": 0, "ndcg@10": 0.1, "popularity": {"ndcg@10": 0.05},
               "beats_popularity": True, "note": "bench_score placeholder, not measured"}
    publish(root, "mf", new_version(DS), buf.getvalue(), {
        "config": {"model": spec, "loss": "bpr", "train": train}, "metrics": metrics, "history": {"epochs": []},
        "data": {"ds": DS, "dataset": DATASET, "snapshot": snap, "rows": rows,
                 "user_index": os.path.join(snap, "user_index"), "item_index": os.path.join(snap, "item_index"),
                 "fingerprints": id_map_digests(snap),
                 "snapshot_time": "2026-10-31T00:00:00+00:00"}})
    return user, item


def run_score(root: str, n_users: int, top_n: int, writer: str = "arrow", model: str = "mf",
              version: str | None = None, extra: tuple[str, ...] = ()) -> dict:
    """`recsys score` as a user runs it; wall time, peak RSS of its process tree, its counts."""
    cmd = [os.path.join(os.path.dirname(sys.executable), "recsys"), "score", "--conf", "conf/default.yaml",
           "--ds", DS, "--set", f"paths.root={root}", "--set", f"dataset={DATASET}", "--set", f"score.model={model}",
           "--set", f"score.top_n={top_n}", "--set", "input.path=unused", "--set", f"score.writer={writer}",
           *(["--model-version", version] if version else []), *(a for x in extra for a in ("--set", x))]
    try:
        run = run_job(cmd, os.path.join(root, "score"))
    except JobFailed as exc:
        sys.exit(f"score failed: {exc}")
    wall, summary = run["wall_s"], run["summary"]
    with open(os.path.join(root, "runs", DS, "score.json")) as f:
        timings = json.load(f)["timings_s"]
    c = summary["counts"]
    return {"writer": writer, "wall_s": wall, "peak_rss_gb": run["peak_rss_gb"],
            "users_per_s": c["users_per_s"], "users_per_s_scoring": c["users_per_s_scoring"],
            "users_per_s_wall": round(n_users / wall, 1), "rows_written": c["rows_written"],
            "users_scored": c["users_scored"], "timings_s": timings}


def score_runs(root: str, n_users: int, top_n: int, repeats: int) -> dict:
    """`repeats` runs of the score job (the machine is shared): the median run by job users/s,
    with every run's figures."""
    runs = []
    for i in range(repeats):
        runs.append(run_score(root, n_users, top_n))
        r = runs[-1]
        print(f"  run {i + 1}: job {r['users_per_s']:,} users/s, scoring stage {r['users_per_s_scoring']:,}, "
              f"wall {r['users_per_s_wall']:,} ({r['wall_s']}s), peak RSS {r['peak_rss_gb']} GB", flush=True)
    median = sorted(runs, key=lambda r: r["users_per_s"])[len(runs) // 2]
    return {**median, "runs": [{k: r[k] for k in ("users_per_s", "users_per_s_scoring", "users_per_s_wall", "wall_s")}
                               for r in runs]}


def bench_als(user: torch.Tensor, item: torch.Tensor, top_n: int, workdir: str) -> dict:
    """ALSModel over the same factors via its JVM constructor; output written to Parquet."""
    from pyspark.ml.recommendation import ALSModel
    spark = local_spark()
    frames = []
    for name, f in (("als_users", user), ("als_items", item)):
        n, rank = f.shape
        feats = pa.ListArray.from_arrays(pa.array(np.arange(0, n * rank + 1, rank, dtype=np.int32)),
                                         pa.array(f.numpy().ravel()))
        write(pa.table({"id": np.arange(n, dtype=np.int32), "features": feats}), os.path.join(workdir, name))
        frames.append(spark.read.parquet(os.path.join(workdir, name)))
    jmodel = spark._jvm.org.apache.spark.ml.recommendation.ALSModel(
        "als_bench", user.shape[1], frames[0]._jdf, frames[1]._jdf)
    # The constructor leaves the column params unset (ALS.fit copies them); defaults as ALS's.
    jmodel.setUserCol("user").setItemCol("item").setBlockSize(4096)
    model = ALSModel(jmodel)
    out = os.path.join(workdir, "als_recs")
    t = time.perf_counter()
    model.recommendForAllUsers(top_n).write.mode("overwrite").parquet(out)
    took = time.perf_counter() - t
    n_out = spark.read.parquet(out).count()
    spark.stop()
    return {"seconds": round(took, 2), "users_per_s": round(user.shape[0] / took, 1), "users_out": n_out,
            "materialised": "written to Parquet (one row per user, array of (item, rating))"}


def bench_torch(user: torch.Tensor, item: torch.Tensor, top_n: int, select=None, batch: int = 1024,
                passes: int = 3) -> dict:
    """The limit: best of `passes` full passes (the machine is shared, the best is the least
    disturbed). `select(scores, k)` -> (values, indices): torch.topk by default, or the job's
    own top-k (recsys.score.topn.top_k) for the limit of the job's algorithm."""
    select = select or (lambda scores, k: torch.topk(scores, k, dim=1))
    torch.set_num_threads(2)
    times = []
    with torch.no_grad():
        for _ in range(passes):
            t = time.perf_counter()
            for start in range(0, user.shape[0], batch):
                select(user[start:start + batch] @ item.T, top_n)
            times.append(time.perf_counter() - t)
    took = min(times)
    return {"seconds": round(took, 2), "users_per_s": round(user.shape[0] / took, 1), "users": user.shape[0],
            "threads": 2, "batch": batch, "passes_s": [round(x, 2) for x in times]}


def prepare_root(root: str, users: int, items: int, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    shutil.rmtree(root, ignore_errors=True)
    t = time.perf_counter()
    snap, rows = build_snapshot(root, users, items, np.random.default_rng(0))
    user, item = build_artifact(root, snap, rows, rank, seed=0)
    return user, item, round(time.perf_counter() - t, 1)  # a Spark start for the digests included


def vs_default(report: dict, workdir: str) -> None:
    """--large: cost per user x item (ns) against the default run's JSON, when there is one."""
    def ns(r: dict, key: str) -> float:
        s = r["score_job"]
        return (s["wall_s"] if key == "wall" else s["timings_s"]["score_and_write"]) / (r["users"] * r["items"]) * 1e9
    report["ns_per_cell"] = {k: ns(report, k) for k in ("score", "wall")}
    try:
        with open(os.path.join(workdir, "bench_score.json")) as f:
            small = json.load(f)
        report["vs_default"] = {"users_x": report["users"] / small["users"],
                                "cells_x": report["users"] * report["items"] / (small["users"] * small["items"]),
                                **{f"cost_per_cell_{k}_x": report["ns_per_cell"][k] / ns(small, k) for k in ("score", "wall")}}
    except (OSError, ValueError, KeyError):
        print("no default-run bench_score.json to compare with")
        return
    v = report["vs_default"]
    print(f"vs {small['users']:,} x {small['items']:,}: {v['users_x']:.0f}x users, {v['cells_x']:.0f}x cells; cost per "
          f"user x item {v['cost_per_cell_score_x']:.2f}x (score+write stage), {v['cost_per_cell_wall_x']:.2f}x (wall); "
          "<= 1: grows no worse than users x items")


def like_for_like(score: dict, limit: dict) -> dict:
    """The job against torch with the same statistic on both sides. The goal's ratio (the job's
    median run against torch's best pass) is the conservative one; on a shared machine the
    passes of one torch measurement alone spread by tens of percent."""
    runs = [r["users_per_s"] for r in score["runs"]]
    torch_users = [limit["users"] / s for s in limit["passes_s"]]
    return {"job_best_vs_torch_best": round(max(runs) / max(torch_users), 3),
            "job_median_vs_torch_median": round(statistics.median(runs) / statistics.median(torch_users), 3)}


def vs_baselines(report: dict, root: str, user: torch.Tensor, item: torch.Tensor, top_n: int, workdir: str) -> None:
    print("running the score job with score.writer=spark (Spark's Parquet writer) ...", flush=True)
    spark_writer = run_score(root, user.shape[0], top_n, writer="spark")
    print("running ALS recommendForAllUsers ...", flush=True)
    als = bench_als(user, item, top_n, workdir)
    print("running torch matmul + topk ...", flush=True)
    limit = bench_torch(user, item, top_n)
    own = bench_torch(user, item, top_n, select=top_k)
    score = report["score_job"]
    keys = ("users_per_s", "users_per_s_scoring", "users_per_s_wall")
    ratios = {f"{key}_vs_{name}": score[key] / base["users_per_s"]
              for key in keys for name, base in (("als", als), ("torch", limit))}
    passed = {"als": ratios["users_per_s_vs_als"] >= GOAL_ALS, "torch": ratios["users_per_s_vs_torch"] >= GOAL_TORCH}
    like = like_for_like(score, limit)
    report.update(spark_writer=spark_writer, als=als, torch=limit, torch_own_top_k=own,
                  ratios={**{k: round(v, 3) for k, v in ratios.items()}, **like}, passed=passed)
    rows = [("recsys score: job (checks to table written)", score["users_per_s"], "users_per_s"),
            ("recsys score: scoring + writing stage", score["users_per_s_scoring"], "users_per_s_scoring"),
            ("recsys score: wall, incl. JVM start", score["users_per_s_wall"], "users_per_s_wall"),
            ("recsys score, score.writer=spark: job", spark_writer["users_per_s"], None),
            ("ALS recommendForAllUsers -> Parquet", als["users_per_s"], None),
            ("torch, 2 threads, matmul + torch.topk", limit["users_per_s"], None),
            ("torch, 2 threads, matmul + the job's top_k", own["users_per_s"], None)]
    print(f"\n{'':46}{'users/s':>9}{'vs ALS':>9}{'vs torch':>10}")
    for name, ups, key in rows:
        tail = (f"{ratios[key + '_vs_als']:>8.2f}x{ratios[key + '_vs_torch']:>9.2f}x" if key else
                f"{ups / als['users_per_s']:>8.2f}x{ups / limit['users_per_s']:>9.2f}x" if name.startswith("recsys") else "")
        print(f"{name:46}{ups:>9,.0f}{tail}")
    print(f"\n(recsys score: the median of {len(score['runs'])} runs; torch: the best of 3 passes)\n"
          f"the job's users/s against torch.topk's, each taken the same way: best of each "
          f"{like['job_best_vs_torch_best']:.2f}x, median of each {like['job_median_vs_torch_median']:.2f}x\n"
          f"the job against the same algorithm in one process (the job's top_k): "
          f"{score['users_per_s'] / own['users_per_s']:.2f}x (job), "
          f"{score['users_per_s_scoring'] / own['users_per_s']:.2f}x (scoring + writing stage)\n"
          f"goal >= {GOAL_ALS}x ALS: {'PASS' if passed['als'] else 'FAIL'}; "
          f"goal >= {GOAL_TORCH}x torch: {'PASS' if passed['torch'] else 'FAIL'} (the job's users/s)")


def bench_blend(root: str, users: int, top_n: int, rank: int) -> dict:
    """Two mf artifacts scored alone, then their blend: the scoring stage's seconds of each."""
    from recsys.artifacts import load_artifact
    from recsys.train.select import publish_blend
    snap = os.path.join(root, "data", DATASET, f"ds={DS}")
    with open(os.path.join(snap, "_COMPLETE.json")) as f:
        rows = json.load(f)["rows"]
    first = load_artifact(root, "mf")
    build_artifact(root, snap, rows, rank, seed=1)
    second = load_artifact(root, "mf")
    blend = publish_blend(root, DS, [first, second], [0.5, 0.5], {"ndcg@10": 0.1, "users": 0},
                          {"ndcg@10": 0.05})
    out = {}
    for name, model, version in (("member 1", "mf", first.version), ("member 2", "mf", second.version),
                                 ("blend", "blend", blend.version)):
        r = run_score(root, users, top_n, model=model, version=version)
        out[name] = {"scoring_s": r["timings_s"]["score_and_write"], "users_per_s_scoring": r["users_per_s_scoring"],
                     "users_per_s": r["users_per_s"], "peak_rss_gb": r["peak_rss_gb"]}
        print(f"  {name}: scoring + writing {out[name]['scoring_s']}s ({r['users_per_s_scoring']:,} users/s), "
              f"job {r['users_per_s']:,} users/s, peak RSS {r['peak_rss_gb']} GB", flush=True)
    members = out["member 1"]["scoring_s"] + out["member 2"]["scoring_s"]
    out["blend_vs_sum_of_members"] = round(out["blend"]["scoring_s"] / members, 3)
    print(f"blend scoring stage / sum of its members': {out['blend_vs_sum_of_members']} (goal <= 1)", flush=True)
    return out


def bench_reasons(root: str, users: int, top_n: int, repeats: int) -> dict:
    """The score job with and without `score.reasons`, runs interleaved (the machine is shared):
    the median scoring + writing stage of each and their ratio (goal <= GOAL_REASONS)."""
    runs: dict[str, list[dict]] = {"on": [], "off": []}
    for i in range(repeats):
        for name in ("off", "on"):
            r = run_score(root, users, top_n, extra=(f"score.reasons={'true' if name == 'on' else 'false'}",))
            runs[name].append(r)
            print(f"  run {i + 1}, reasons {name}: scoring + writing {r['timings_s']['score_and_write']}s, "
                  f"job {r['users_per_s']:,} users/s, peak RSS {r['peak_rss_gb']} GB", flush=True)
    stage = {k: statistics.median(r["timings_s"]["score_and_write"] for r in v) for k, v in runs.items()}
    job = {k: statistics.median(r["wall_s"] for r in v) for k, v in runs.items()}
    out = {"stage_s": stage, "wall_s": job, "stage_ratio": round(stage["on"] / stage["off"], 3),
           "wall_ratio": round(job["on"] / job["off"], 3),
           "runs": {k: [r["timings_s"]["score_and_write"] for r in v] for k, v in runs.items()}}
    print(f"scoring + writing stage with reasons / without: {out['stage_ratio']} (median of {repeats} each; "
          f"goal <= {GOAL_REASONS}); whole command {out['wall_ratio']}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=200_000)
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--top-n", type=int, default=100)
    ap.add_argument("--workdir", default=os.path.join(REPO, ".bench", "score"))
    ap.add_argument("--large", action="store_true", help="only the score job at 1M users x 100k items")
    ap.add_argument("--repeats", type=int, default=None, help="score job runs (default 3; 1 with --large)")
    ap.add_argument("--blend", action="store_true", help="only two mf artifacts and their blend")
    ap.add_argument("--reasons", action="store_true", help="only the score job with and without score.reasons")
    args = ap.parse_args()
    workdir = os.path.abspath(args.workdir)
    info = machine()
    print(f"machine: {info['cores']} cores, {info['memory_gb']} GB, {info['cpu']}", flush=True)
    users, items = (1_000_000, 100_000) if args.large else (args.users, args.items)
    root = os.path.join(workdir, "root-large" if args.large else "root")
    user, item, built = prepare_root(root, users, items, args.rank)
    print(f"{users:,} users x {items:,} items, rank {args.rank}: snapshot + artifact in {built}s; "
          "running the score job ...", flush=True)
    if args.blend:
        report = {"machine": info, "users": users, "items": items, "blend": bench_blend(root, users, args.top_n, args.rank)}
        with open(os.path.join(workdir, "bench_score_blend.json"), "w") as f:
            json.dump(report, f, indent=2)
        return
    if args.reasons:
        report = {"machine": info, "users": users, "items": items,
                  "reasons": bench_reasons(root, users, args.top_n, args.repeats or 3)}
        with open(os.path.join(workdir, "bench_score_reasons.json"), "w") as f:
            json.dump(report, f, indent=2)
        return
    score = score_runs(root, users, args.top_n, args.repeats or (1 if args.large else 3))
    report = {"machine": info, "users": users, "items": items, "rank": args.rank, "top_n": args.top_n,
              "build_s": built, "score_job": score}
    print(f"score job (median run): {score['users_per_s']:,} users/s (job), {score['users_per_s_scoring']:,} "
          f"(scoring + writing stage), {score['users_per_s_wall']:,} wall incl. JVM start ({score['wall_s']}s), "
          f"{score['rows_written']:,} rows, peak RSS {score['peak_rss_gb']} GB\nstages (s): {score['timings_s']}",
          flush=True)
    if args.large:
        vs_default(report, workdir)
    else:
        vs_baselines(report, root, user, item, args.top_n, workdir)
    path = os.path.join(workdir, "bench_score_large.json" if args.large else "bench_score.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
