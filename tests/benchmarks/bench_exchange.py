"""Benchmark the ways a step can move sparse table rows between workers, on Gloo.

- replicated: every worker holds every table; after backward it all-gathers its touched rows'
  gradients, after a small all-gather of the row counts;
- replicated, the same bytes by one all-to-all (each worker's buffer repeated once per worker
  as the input; what `train/sparse.py` does, since Gloo runs it faster than its all-gather);
- row-sharded (TorchRec's row-wise sharding): worker r owns rows = r (mod W); in the forward a
  worker sends the ids it needs to their owners and gets the rows back, in the backward it
  sends their gradients back: an all-to-all of counts, then of ids, rows and gradients.

All three move the same touched rows (R per worker, width d); only the collectives are timed, on
the configured number of CPU processes, in one run, interleaved, best of three rounds.

    .venv/bin/python tests/benchmarks/bench_exchange.py [--workers 2] [--rows 1000 2200 4400] [--dim 129]
"""
from __future__ import annotations

import argparse
import os
import socket
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from common import machine  # this folder is sys.path[0] when run as a script

STEPS, WARMUP, ROUNDS = 200, 20, 3


def _worker(rank: int, world: int, port: int, rows: list[int], d: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    for r in rows:
        # Replicated: R rows of d floats + 2 floats carrying the row id, to every worker.
        buf, counts = torch.randn(r * (d + 2)), torch.tensor([r, 1])
        gathered, all_counts = [torch.empty_like(buf) for _ in range(world)], [torch.empty_like(counts) for _ in range(world)]
        repeated, received = buf.repeat(world), torch.empty(world * buf.numel())
        # Sharded: the R rows' owners are spread evenly over the W workers (1/W of them local).
        n = r // world * world
        split = torch.full((world,), n // world)
        split_in = torch.empty_like(split)
        ids, ids_in = torch.arange(n, dtype=torch.int64), torch.empty(n, dtype=torch.int64)
        vecs, vecs_in = torch.randn(n, d), torch.empty(n, d)

        def replicated():
            dist.all_gather(all_counts, counts)
            dist.all_gather(gathered, buf)

        def replicated_all_to_all():
            dist.all_gather(all_counts, counts)
            dist.all_to_all_single(received, repeated)

        def sharded():
            dist.all_to_all_single(split_in, split)
            dist.all_to_all_single(ids_in, ids)
            dist.all_to_all_single(vecs_in, vecs)  # forward: the rows from their owners
            dist.all_to_all_single(vecs_in, vecs)  # backward: their gradients to the owners

        best = {}
        for _ in range(ROUNDS):
            for name, step in (("replicated", replicated), ("all_to_all", replicated_all_to_all), ("sharded", sharded)):
                for _ in range(WARMUP):
                    step()
                dist.barrier()
                start = time.perf_counter()
                for _ in range(STEPS):
                    step()
                ms = (time.perf_counter() - start) / STEPS * 1000
                best[name] = min(best.get(name, ms), ms)
        if rank == 0:
            sent_rep = (buf.numel() + counts.numel()) * 4 * (world - 1)  # to each other worker
            sent_sh = (split.numel() * 8 + ids.numel() * 8 + 2 * vecs.numel() * 4) * (world - 1) // world
            out[r] = (best["replicated"], sent_rep, best["all_to_all"], best["sharded"], sent_sh)
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rows", type=int, nargs="+", default=[1000, 2200, 4400],
                    help="touched rows per worker and step (mf at 1M x 100k: about 2,200 of width 129)")
    ap.add_argument("--dim", type=int, default=129)
    args = ap.parse_args()
    info = machine()
    print(f"machine: {info['cores']} cores, {info['memory_gb']} GB, {info['cpu']}; {args.workers} Gloo workers", flush=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_worker, args=(args.workers, port, args.rows, args.dim, out), nprocs=args.workers)
        results = dict(out)
    print(f"\n{'rows/worker':>11}  {'replicated ms':>13}  {'sent MB':>7}  {'by all-to-all ms':>16}  "
          f"{'sharded ms':>10}  {'sent MB':>7}  sharded/replicated")
    for r in args.rows:
        rep, rep_b, a2a, sh, sh_b = results[r]
        print(f"{r:>11,}  {rep:>13.2f}  {rep_b / 1e6:>7.2f}  {a2a:>16.2f}  {sh:>10.2f}  {sh_b / 1e6:>7.2f}  {sh / rep:.2f}")


if __name__ == "__main__":
    main()
