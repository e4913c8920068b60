"""Benchmark one lightgcn training step: users, positives and negatives expanded together
(`pair_vectors`, what training does) against three separate expansions (as it did before).

Reads the graph of the snapshots `make bench-train-scale` keeps under its workdir, builds the
model as training does, with the shipped settings (`train.per_model.lightgcn` over the
defaults: fanout, layers, dim, batch size, shared negatives; sparse id rows), and times forward
and backward of the shared sampled softmax on the same kind of batch both ways, interleaved in
one process on one thread so the machine's noise falls on both. Prints per size the median step
time, the rows a step touches (what it updates and exchanges), and the ratio.

    .venv/bin/python tests/benchmarks/bench_graph_step.py [--steps 15] [--sizes 25kx2.5k 1Mx100k]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import time

import numpy as np
import torch

from common import REPO, machine  # this folder is sys.path[0] when run as a script
from recsys.config import TrainConfig
from recsys.models import build_model
from recsys.models.graph import Graph, LightGCN
from recsys.snapshot import read_graph
from recsys.train.objectives import sampled_softmax
from recsys.train.sparse import make_sparse


def step(model: LightGCN, u: np.ndarray, i: np.ndarray, rng: np.random.Generator, t: TrainConfig,
         log_q: torch.Tensor, joint: bool) -> tuple[float, int]:
    """Seconds of forward + backward, and rows the gradient holds, for one batch of edges."""
    e = rng.integers(0, len(u), t.batch_size)
    users, y = torch.from_numpy(u[e]), torch.from_numpy(i[e])
    neg = torch.from_numpy(rng.integers(0, model.n_items, t.sampled_negatives))
    start = time.perf_counter()
    if joint:
        h, items = model.pair_vectors(users, torch.cat([y, neg]))
        pos, negv = items[: len(y)], items[len(y):]
    else:
        h, pos, negv = model.user_vectors(users), model.item_vectors(y), model.item_vectors(neg)
    model.node.weight.grad = None
    sampled_softmax(h, pos, y, negv, neg, log_q).mean().backward()
    return time.perf_counter() - start, model.node.weight.grad.coalesce().indices().shape[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", default=os.path.join(REPO, ".bench", "scale"))
    ap.add_argument("--sizes", nargs="+", default=["25kx2.5k", "250kx25k", "1Mx100k"])
    ap.add_argument("--steps", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t = TrainConfig().for_model("lightgcn")
    print(f"machine: {machine()}; batch {t.batch_size}, {t.sampled_negatives} negatives, fanout "
          f"{t.graph_fanout}, {t.graph_layers} layers, dim {t.dim}", flush=True)
    out = []
    for size in args.sizes:
        found = glob.glob(os.path.join(args.workdir, size, "root", "data", "*", "ds=*", "graph"))
        if not found:
            print(f"{size}: no snapshot under {args.workdir} (run make bench-train-scale first)", flush=True)
            continue
        u, i, w = read_graph(found[0], refit=False)
        n_users, n_items = int(u.max()) + 1, int(i.max()) + 1
        torch.manual_seed(0)
        model = build_model({"model": "lightgcn", "n_users": n_users, "n_items": n_items, "dim": t.dim,
                             "layers": t.graph_layers, "fanout": t.graph_fanout})
        make_sparse(model)  # as the train loop's optimisers do
        model.set_graph(Graph(u, i, w, n_users, n_items))
        log_q = torch.zeros(n_items)  # uniform negatives: the same constant on every logit
        rng = np.random.default_rng(0)
        runs = {False: [], True: []}
        for k in range(args.steps + 1):
            for joint in (False, True):
                took = step(model, u, i, rng, t, log_q, joint)
                if k:  # the first of each is warm-up
                    runs[joint].append(took)
        sep, joint = (np.array(runs[j]) for j in (False, True))
        row = {"size": size, "edges": len(u), "separate_s": float(np.median(sep[:, 0])),
               "joint_s": float(np.median(joint[:, 0])), "separate_rows": float(sep[:, 1].mean()),
               "joint_rows": float(joint[:, 1].mean())}
        row["speedup"] = row["separate_s"] / row["joint_s"]
        out.append(row)
        print(f"{size}: {len(u):,} edges; step {row['separate_s']:.3f} s separate, {row['joint_s']:.3f} s joint "
              f"({row['speedup']:.2f}x); rows touched {row['separate_rows']:,.0f} -> {row['joint_rows']:,.0f}",
              flush=True)
    with open(os.path.join(args.workdir, "bench_graph_step.json"), "w") as f:
        json.dump({"machine": machine(), "date": time.strftime("%Y-%m-%d"), "rows": out}, f, indent=2)


if __name__ == "__main__":
    main()
