"""Benchmark quality: the published table against rows cut from the log before the pipeline saw it.

The protocol (issue 10), as a user would meet it:
1. From the log (default: the bundled MovieLens-100k), cut each user's newest 20% (by time,
   then item id; round(0.2 n) rows; users with fewer than 5 rows keep everything) and drop cut
   rows whose item is absent from what remains.
2. Give the rest to the pipeline as an ordinary log: `recsys run` with the shipped
   configuration (conf/movielens.yaml), once per model (`--set train.model=M`, each into its
   own table; `--force`, so a model the gate refuses is still measured, its verdict recorded).
3. Read each table back with `recsys sql` and score its top 10 against the cut rows, over every
   user who has cut rows (a user without a list scores 0).
4. Peers on exactly the rows the pipeline was given: popularity, EASE (λ grid) and Spark MLlib
   ALS, implicit (regParam x alpha grid), each tuned on the cut rows themselves, so they are
   optimistic. The user's rows in the log are excluded from the peers' lists, as the table
   excludes the snapshot's.
Printed: NDCG@10 and Recall@10 with standard errors, catalogue coverage, each row's paired
difference (± SE) against the best peer, and the training time. Metric definitions are those
of `recsys/ranking/metrics.py`.

`--protocol random` (issue 14: a log without timestamps): the log loses its time column, each
user's cut is 20% of their pairs at random (seeded), and the pipeline is told the log has no
timestamps (`input.columns.ts: null`, random split) and that its value column is a count to
weigh pairs by (`prepare.weight.method: value`), as a play-count export would be read.

`--protocol cold` (issue 14: new items): the newest 10% of items by first interaction are new.
Their rows are split by user, half and half (seeded): the test half is the truth. In the cold
run every row of the new items is cut from the log, so the pipeline knows them only from the
catalogue (movies.tsv: title, genres) and `score.new_items` lets a content-aware model
recommend them; in the warm run the other half of their rows stays in the log (`new_items`
too: an item left below the k-core's minimum is still placed by content). Both runs rank
the new items alone (`score.allow_items`: the new items) and are scored by recall@50 over the
test users; printed: both and their ratio. Popularity and ALS score zero cold by construction.

    .venv/bin/python tests/benchmarks/bench_quality.py [--models sasrec,mf] [--log FILE] [--protocol random|cold]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

import numpy as np
import pandas as pd
import torch

from common import REPO, JobFailed, machine, run_job  # this folder is sys.path[0] when run as a script
from recsys.config import resolve_data_path
from recsys.models.autoencoders import ease_from_gram
from recsys.ranking.metrics import ndcg_at_k, recall_at_k

RECSYS = os.path.join(os.path.dirname(sys.executable), "recsys")
CONF = os.path.join(REPO, "conf", "movielens.yaml")
DS = "2026-12-01"
K = 10
# "night": the configuration names no model, so the night chooses among its candidates.
MODELS = ("night", "sasrec", "gru4rec", "multvae", "ease", "als", "mf", "neumf", "two_tower", "lightgcn")
# What the pipeline is told about a log without its time column (--protocol random).
NO_TIME = ["input.names=[user_id, item_id, rating]",
           "input.columns={user: user_id, item: item_id, ts: null, value: rating}",
           "prepare.split.method=random", "prepare.weight.method=value"]
SEED = 20261203
EASE_LAMBDAS = (50, 100, 200, 300, 500, 800, 1200, 2000)
ALS_REGS = (0.03, 0.1, 0.3, 1.0)
ALS_ALPHAS = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


def cut_log(log: pd.DataFrame, share: float = 0.2, min_rows: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(what the pipeline gets, the cut rows): each user's newest round(share * n) rows."""
    log = log.sort_values(["user", "ts", "item"], kind="stable").reset_index(drop=True)
    pos = log.groupby("user").cumcount()
    n = log.groupby("user")["item"].transform("size")
    n_cut = np.where(n < min_rows, 0, np.round(share * n)).astype(int)
    is_cut = pos >= n - n_cut
    kept, cut = log[~is_cut], log[is_cut]
    return kept, cut[cut["item"].isin(set(kept["item"]))]


def cut_random(log: pd.DataFrame, share: float = 0.2, min_rows: int = 5,
               seed: int = SEED) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The same cut for a log without time: round(share * n) of each user's rows at random."""
    rng = np.random.default_rng(seed)
    log = log.sort_values(["user", "item"], kind="stable").reset_index(drop=True)
    log = log.assign(_r=rng.random(len(log))).sort_values(["user", "_r"], kind="stable")
    pos = log.groupby("user").cumcount()
    n = log.groupby("user")["item"].transform("size")
    n_cut = np.where(n < min_rows, 0, np.round(share * n)).astype(int)
    is_cut = pos < n_cut
    kept, cut = log[~is_cut].drop(columns="_r"), log[is_cut].drop(columns="_r")
    return kept, cut[cut["item"].isin(set(kept["item"]))]


def cut_cold(log: pd.DataFrame, share: float = 0.1, seed: int = SEED
             ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[int]]:
    """(cold log, warm log, truth rows, new items): see --protocol cold."""
    first = log.groupby("item")["ts"].min().sort_values(kind="stable")
    new = sorted(first.index[-round(share * len(first)):].tolist())
    rows = log[log["item"].isin(new)]
    users = np.sort(rows["user"].unique())
    test_users = set(np.random.default_rng(seed).permutation(users)[: len(users) // 2].tolist())
    truth = rows[rows["user"].isin(test_users)]
    cold = log[~log["item"].isin(new)]
    warm = log.drop(index=truth.index)
    return cold, warm, truth, new


def recall_on(lists: dict, truth: pd.DataFrame, k: int = 50) -> np.ndarray:
    """Per test user (in user order), the share of their truth items in their top k."""
    relevant = truth.groupby("user")["item"].apply(set)
    return np.array([len(set(lists.get(u, [])[:k]) & rel) / len(rel) for u, rel in relevant.items()])


def cold_protocol(args) -> None:
    log = pd.read_csv(args.log, sep="\t", names=["user", "item", "rating", "ts"])
    cold, warm, truth, new = cut_cold(log, seed=args.seed)
    allow = os.path.join(args.root, "new_items.csv")
    pd.DataFrame({"item_id": new}).to_csv(allow, index=False)
    print(f"{len(new)} new items; {len(truth):,} truth rows of {truth['user'].nunique():,} users; "
          f"cold log {len(cold):,} rows, warm log {len(warm):,}", flush=True)
    # new_items in both runs: in the warm one, a new item with fewer rows than the k-core's
    # minimum is still unknown to the interactions, and is placed by its content as in the cold.
    common = ["score.top_n=50", f"score.allow_items={{path: {allow}, format: csv}}", "score.new_items=true",
              *args.extra]
    models = "two_tower" if args.models == ",".join(MODELS) else args.models
    out = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "protocol": "cold", "new_items": len(new),
           "truth_rows": len(truth), "users": int(truth["user"].nunique()), "extra": args.extra,
           "user_ids": sorted(int(u) for u in truth["user"].unique()), "rows": []}
    for model in models.split(","):
        recalls = {}
        for kind, part in (("cold", cold), ("warm", warm)):
            path = os.path.join(args.root, f"log-{kind}.tsv")
            part.to_csv(path, sep="\t", header=False, index=False)
            os.makedirs(os.path.join(args.root, kind), exist_ok=True)
            run = run_pipeline(model, os.path.join(args.root, kind), path, args.conf, common)
            lists = read_table(os.path.join(args.root, kind), args.conf, run["table"], k=50)
            recalls[kind] = recall_on(lists, truth)
            print(f"  {model} {kind}: recall@50 on the new items {recalls[kind].mean():.4f} "
                  f"± {mean_se(recalls[kind])[1]:.4f}, train {run['train_s']:.0f}s", flush=True)
        ratio = recalls["cold"].mean() / max(recalls["warm"].mean(), 1e-12)
        print(f"  {model}: cold / warm recall@50 = {ratio:.2f}", flush=True)
        out["rows"].append({"model": model, "cold_recall@50": float(recalls["cold"].mean()),
                            "warm_recall@50": float(recalls["warm"].mean()), "ratio": float(ratio),
                            "cold_se": mean_se(recalls["cold"])[1], "warm_se": mean_se(recalls["warm"])[1],
                            "cold_per_user": recalls["cold"].tolist(), "warm_per_user": recalls["warm"].tolist()})
    save(out, args)


class Judge:
    """Scores top-K lists (item ids per user) against the cut rows of every user who has any."""

    def __init__(self, cut: pd.DataFrame, catalogue: int):
        self.users = np.sort(cut["user"].unique())
        self.relevant = cut.groupby("user")["item"].apply(set).to_dict()
        self.catalogue = catalogue

    def score(self, lists: dict) -> dict:
        hits = torch.zeros(len(self.users), K, dtype=torch.bool)
        shown = set()
        for row, user in enumerate(self.users):
            top = list(lists.get(user, []))[:K]
            shown.update(top)
            rel = self.relevant[user]
            for j, item in enumerate(top):
                hits[row, j] = item in rel
        n_rel = torch.tensor([len(self.relevant[u]) for u in self.users])
        ndcg = ndcg_at_k(hits, n_rel).numpy()
        recall = recall_at_k(hits, n_rel).numpy()
        return {"ndcg": ndcg, "recall": recall, "coverage": len(shown) / self.catalogue,
                "users_with_list": sum(1 for u in self.users if len(lists.get(u, [])) > 0)}


def mean_se(x: np.ndarray) -> tuple[float, float]:
    return float(x.mean()), float(x.std(ddof=1) / np.sqrt(len(x)))


def top_lists(scores: np.ndarray, users: np.ndarray, items: np.ndarray, seen: np.ndarray) -> dict:
    """Dense [users, items] scores -> {user: top-K item ids}, the user's own rows excluded."""
    s = np.where(seen, -np.inf, scores)
    top = np.argsort(-s, axis=1, kind="stable")[:, :K]
    return {u: [items[j] for j in row] for u, row in zip(users, top)}


def peers(kept: pd.DataFrame, judge: Judge) -> dict:
    users = judge.users
    items = np.sort(kept["item"].unique())
    col = {it: j for j, it in enumerate(items)}
    row = {u: i for i, u in enumerate(users)}
    x = np.zeros((len(users), len(items)), np.float64)
    mine = kept[kept["user"].isin(row)]
    x[mine["user"].map(row).to_numpy(), mine["item"].map(col).to_numpy()] = 1.0
    seen = x > 0
    out = {}
    t = time.perf_counter()
    pop = np.bincount(kept["item"].map(col).to_numpy(), minlength=len(items)).astype(np.float64)
    out["peer:popularity"] = {"scores": judge.score(top_lists(np.tile(pop, (len(users), 1)), users, items, seen)),
                         "train_s": time.perf_counter() - t, "setting": ""}
    # EASE on every user of the log (not only those with cut rows).
    all_users = np.sort(kept["user"].unique())
    xa = np.zeros((len(all_users), len(items)))
    xa[kept["user"].map({u: i for i, u in enumerate(all_users)}).to_numpy(), kept["item"].map(col).to_numpy()] = 1.0
    gram = torch.as_tensor(xa.T @ xa)
    best = None
    for lam in EASE_LAMBDAS:
        t = time.perf_counter()
        b = ease_from_gram(gram, lam).double().numpy()
        res = judge.score(top_lists(x @ b, users, items, seen))
        cand = {"scores": res, "train_s": time.perf_counter() - t, "setting": f"λ={lam}"}
        if best is None or res["ndcg"].mean() > best["scores"]["ndcg"].mean():
            best = cand
    out["peer:ease"] = best
    out["peer:als"] = als_peer(kept, users, items, seen, judge)
    return out


def cached_peers(kept: pd.DataFrame, cut: pd.DataFrame, judge: Judge, root: str) -> dict:
    """`peers`, kept under the root by a digest of the kept and cut rows and of the grids: the
    grids take minutes and depend on nothing else."""
    import hashlib
    import pickle
    h = hashlib.sha256(pd.util.hash_pandas_object(pd.concat([kept, cut])).values.tobytes())
    h.update(repr((EASE_LAMBDAS, ALS_REGS, ALS_ALPHAS)).encode())
    digest = h.hexdigest()[:16]
    path = os.path.join(root, f"peers-{digest}.pkl")
    if os.path.exists(path):
        with open(path, "rb") as f:
            return pickle.load(f)
    results = peers(kept, judge)
    with open(path, "wb") as f:
        pickle.dump(results, f)
    return results


def als_peer(kept: pd.DataFrame, users, items, seen, judge: Judge) -> dict:
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import SparkSession
    spark = (SparkSession.builder.master("local[2]").appName("bench-quality-als")
             .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false").config("spark.sql.shuffle.partitions", "4")
             .config("spark.driver.memory", "4g").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    pairs = kept.drop_duplicates(["user", "item"])[["user", "item"]].astype("int64").assign(w=1.0)
    df = spark.createDataFrame(pairs).cache()
    col = {it: j for j, it in enumerate(items)}
    best = None
    for reg in ALS_REGS:
        for alpha in ALS_ALPHAS:
            t = time.perf_counter()
            model = ALS(rank=64, maxIter=15, regParam=reg, alpha=alpha, implicitPrefs=True, userCol="user",
                        itemCol="item", ratingCol="w", seed=0, coldStartStrategy="drop").fit(df)
            uf = model.userFactors.toPandas().set_index("id")
            vf = model.itemFactors.toPandas().set_index("id")
            u = np.stack([uf.loc[x, "features"] if x in uf.index else np.zeros(64) for x in users])
            v = np.zeros((len(items), 64))
            for it, feats in vf["features"].items():
                if it in col:
                    v[col[it]] = feats
            res = judge.score(top_lists(u @ v.T, users, items, seen))
            cand = {"scores": res, "train_s": time.perf_counter() - t, "setting": f"reg={reg}, alpha={alpha}"}
            if best is None or res["ndcg"].mean() > best["scores"]["ndcg"].mean():
                best = cand
    spark.stop()
    return best


def variant(entry: str) -> tuple[str, list[str]]:
    """`mf` or `mf:optimizer=adam:lr=0.01` (a model with train settings of its own) ->
    (model, its --set overrides)."""
    model, *settings = entry.split(":")
    return model, [f"train.per_model.{model}.{kv}" for kv in settings]


def run_pipeline(entry: str, root: str, log_path: str, conf: str, extra: list[str]) -> dict:
    """One `recsys run` as a user would run it; returns its table's lists and timings."""
    model, own = variant(entry)
    label = re.sub(r"[^a-z0-9]+", "_", entry.lower()).strip("_")
    table = f"bench.recs_{label}"
    sets = [f"paths.root={root}", f"input.path={log_path}", f"score.table={table}",
            *([f"train.model={model}"] if model != "night" else []), *extra, *own]
    cmd = [RECSYS, "run", "--conf", conf, "--ds", DS, "--force", *(a for s in sets for a in ("--set", s))]
    job = run_job(cmd, os.path.join(root, f"run-{label}"))
    with open(os.path.join(root, "runs", DS, "train.json")) as f:
        train = json.load(f)
    with open(os.path.join(root, "runs", DS, "score.json")) as f:
        score = json.load(f)
    return {"wall_s": job["wall_s"], "train_s": train["timings_s"].get("train", train["timings_s"].get("total")),
            "leaderboard": train.get("leaderboard"),
            "version": score["counts"]["model_version"], "gate": score.get("gate", {}).get("message"),
            "gate_passed": score.get("gate", {}).get("passed"), "table": table}


def read_table(root: str, conf: str, table: str, k: int = K) -> dict:
    import subprocess
    query = f"SELECT user_id, item_id, rank FROM {table} WHERE ds = '{DS}' AND rank <= {k}"
    out = subprocess.run([RECSYS, "sql", "--conf", conf, "--set", f"paths.root={root}", query],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    rows = pd.DataFrame([json.loads(x) for x in out.splitlines() if x.startswith("{")])
    rows = rows.sort_values(["user_id", "rank"])
    return {int(u): [int(i) for i in g["item_id"]] for u, g in rows.groupby("user_id")}


def report(results: dict, judge: Judge) -> list[dict]:
    best_peer = max(("peer:ease", "peer:als"), key=lambda n: results[n]["scores"]["ndcg"].mean())
    ref = results[best_peer]["scores"]["ndcg"]
    rows = []
    for name, r in results.items():
        s = r["scores"]
        ndcg, ndcg_se = mean_se(s["ndcg"])
        rec, rec_se = mean_se(s["recall"])
        diff, diff_se = mean_se(s["ndcg"] - ref)
        rows.append({"name": name, "ndcg@10": ndcg, "ndcg_se": ndcg_se, "recall@10": rec, "recall_se": rec_se,
                     "coverage@10": s["coverage"], "vs_best_peer": diff, "vs_best_peer_se": diff_se,
                     "relative": ndcg / ref.mean() - 1, "train_s": r.get("train_s"), "setting": r.get("setting", ""),
                     "users_with_list": s["users_with_list"], "gate": r.get("gate"),
                     "leaderboard": r.get("leaderboard"),
                     # per user, in judge order: lets runs of different models be paired later
                     "ndcg_per_user": [round(float(x), 6) for x in s["ndcg"]]})
    print(f"\nbest peer: {best_peer} ({results[best_peer].get('setting')}); {len(judge.users)} users, "
          f"paired differences against it")
    print(f"{'':<16} {'NDCG@10':>16} {'Recall@10':>16} {'cov@10':>7} {'vs best peer':>20} {'rel':>7} {'train s':>8}")
    for r in sorted(rows, key=lambda r: -r["ndcg@10"]):
        ts = f"{r['train_s']:.0f}" if r["train_s"] is not None else ""
        print(f"{r['name']:<16} {r['ndcg@10']:.4f} ± {r['ndcg_se']:.4f} {r['recall@10']:.4f} ± {r['recall_se']:.4f} "
              f"{r['coverage@10']:7.3f} {r['vs_best_peer']:+.4f} ± {r['vs_best_peer_se']:.4f} "
              f"{100 * r['relative']:+6.1f}% {ts:>8}  {r['setting']}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated; 'none' for peers only")
    ap.add_argument("--log", default=resolve_data_path("package:ml-100k/u.data"),
                    help="a tab-separated log of user, item, rating, unix time (MovieLens u.data)")
    ap.add_argument("--conf", default=CONF)
    ap.add_argument("--root", default=os.path.join(REPO, ".bench", "quality"))
    ap.add_argument("--set", dest="extra", action="append", default=[], help="extra config override")
    ap.add_argument("--protocol", choices=("userlast", "random", "cold"), default="userlast",
                    help="userlast: cut each user's newest 20%%; random: a log without time, 20%% cut at random")
    ap.add_argument("--seed", type=int, default=SEED,
                    help="the random and cold cuts' seed: another draw of the rows, to check a choice made on one")
    ap.add_argument("--pair", action="append", default=[], metavar="A,B",
                    help="print the paired NDCG difference of two of the --models entries")
    args = ap.parse_args()
    os.makedirs(args.root, exist_ok=True)
    if args.protocol == "cold":
        return cold_protocol(args)
    log = pd.read_csv(args.log, sep="\t", names=["user", "item", "rating", "ts"])
    if args.protocol == "random":
        kept, cut = cut_random(log, seed=args.seed)
        kept = kept.drop(columns="ts")
        args.extra = [*NO_TIME, *args.extra]
    else:
        kept, cut = cut_log(log)
    log_path = os.path.join(args.root, "log.tsv")
    kept.to_csv(log_path, sep="\t", header=False, index=False)
    print(f"log {len(log):,} rows: the pipeline gets {len(kept):,}, {len(cut):,} cut rows of "
          f"{cut['user'].nunique():,} users are the truth", flush=True)
    judge = Judge(cut, kept["item"].nunique())
    results = cached_peers(kept, cut, judge, args.root)
    for name in ("peer:popularity", "peer:ease", "peer:als"):
        print(f"  {name}: ndcg@10 {results[name]['scores']['ndcg'].mean():.4f} ({results[name]['setting']})",
              flush=True)
    models = [] if args.models == "none" else args.models.split(",")
    for model in models:
        t = time.perf_counter()
        try:
            run = run_pipeline(model, args.root, log_path, args.conf, args.extra)
        except JobFailed as exc:
            print(f"  {model}: failed: {exc}", flush=True)
            continue
        lists = read_table(args.root, args.conf, run["table"])
        results[model] = {"scores": judge.score(lists), "train_s": run["train_s"],
                          "setting": run["version"], "gate": run["gate"]}
        if run["leaderboard"]:
            print("  the night's leaderboard (validation):", flush=True)
            for r in sorted(run["leaderboard"], key=lambda r: -r.get("ndcg@10", -1)):
                print(f"    {r['name']:<28} " + (f"ndcg@10 {r['ndcg@10']:.4f} ± {r['ndcg@10_se']:.4f}"
                                                   if "ndcg@10" in r else f"skipped: {r['skipped']}")
                      + ("  <- published" if r.get("winner") else ""), flush=True)
            results[model]["leaderboard"] = run["leaderboard"]
        print(f"  {model}: ndcg@10 {results[model]['scores']['ndcg'].mean():.4f}, train {run['train_s']:.0f}s, "
              f"whole run {time.perf_counter() - t:.0f}s; gate: {run['gate']}", flush=True)
    rows = report(results, judge)
    for pair in args.pair:
        a, b = pair.split(",")
        if a in results and b in results:
            diff, se = mean_se(results[a]["scores"]["ndcg"] - results[b]["scores"]["ndcg"])
            print(f"paired NDCG@10 {a} - {b}: {diff:+.4f} ± {se:.4f} ({diff / se if se else 0:+.1f} SE)")
    out = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "log": args.log, "protocol": args.protocol,
           "seed": args.seed, "rows": rows,
           "users": len(judge.users), "user_ids": [int(u) for u in judge.users], "cut_rows": len(cut), "extra": args.extra}
    save(out, args)


def save(out: dict, args) -> None:
    """.bench/quality[-protocol][-models].json: per-user figures, so later runs can be paired."""
    name = "quality.json" if args.models == ",".join(MODELS) else f"quality-{re.sub(r'[^A-Za-z0-9_.]+', '-', args.models)}.json"
    if args.protocol != "userlast":
        name = name.replace("quality", f"quality-{args.protocol}", 1)
    if args.seed != SEED:
        name = name.replace(".json", f"-seed{args.seed}.json")
    with open(os.path.join(REPO, ".bench", name), "w") as f:
        json.dump(out, f, indent=2, default=float)


if __name__ == "__main__":
    main()
