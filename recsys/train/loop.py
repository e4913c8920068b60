"""The training function TorchDistributor runs on every worker.

`train_worker(spec)` knows nothing about Spark: it reads its shard with Petastorm, samples
negatives, steps DDP, evaluates on rank 0, checkpoints every epoch and returns the history.
Seeds are derived from (seed, epoch, rank) at the start of each epoch, so a run resumed from a
checkpoint continues exactly as the uninterrupted run would have.
"""
from __future__ import annotations

import io
import json
import logging
import sys
import time
import traceback
import warnings
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from recsys import fsio
from recsys import schema as S
from recsys.config import TrainConfig
from recsys.faults import maybe_fail
from recsys.models import build_model
from recsys.models.features import load_features
from recsys.ranking.evaluator import Evaluator, popularity
from recsys.snapshot import read_pairs
from recsys.train import distributed as D
from recsys.train.losses import LOSSES
from recsys.train.negatives import NegativeSampler
from recsys.train.reader import open_shard, rebatch

log = logging.getLogger("recsys.train")
COLUMNS = [S.USER_IDX, S.ITEM_IDX, S.WEIGHT]
CHECKSUM_MOD = 2**61 - 1


def pair_checksum(users: np.ndarray, items: np.ndarray, n_items: int) -> int:
    """Order-free fingerprint of a set of rows: sum of (user * n_items + item), modulo a prime."""
    keys = users.astype(np.int64) * n_items + items.astype(np.int64)
    return int(keys.sum() % CHECKSUM_MOD)


def save_state(path: str, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    fsio.write_bytes(path, buf.getvalue())


def load_state(path: str) -> dict[str, Any]:
    """Only tensors and plain containers: `weights_only=True`, never arbitrary pickle."""
    return torch.load(io.BytesIO(fsio.read_bytes(path)), weights_only=True, map_location="cpu")


def train_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Entry point of each DDP worker; every rank returns rank 0's result."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("petastorm").setLevel(logging.WARNING)
    # Petastorm's reader threads use pyarrow 14's legacy API on purpose (see DESIGN.md).
    warnings.filterwarnings("ignore", category=FutureWarning)
    ctx = D.init(spec["use_gpu"])
    try:
        return _train(ctx, spec)
    except BaseException as exc:
        # TorchDistributor reports only that training failed; leave the cause for the driver.
        report = {"rank": ctx.rank, "time": time.time(), "error": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc()}
        fsio.write_bytes(f"{spec['run_dir']}/errors/rank-{ctx.rank}.json", json.dumps(report).encode())
        raise
    finally:
        D.shutdown(ctx)


def _train(ctx: D.DistContext, spec: dict[str, Any]) -> dict[str, Any]:
    t = TrainConfig(**spec["train"])
    paths, model_spec, n_items = spec["paths"], spec["model"], spec["model"]["n_items"]
    torch.manual_seed(t.seed)  # the same initial weights on every rank
    users_f = items_f = None
    if model_spec["model"] == "two_tower":
        users_f = load_features(paths["users"], S.USER_IDX, "n_train")
        items_f = load_features(paths["items"], S.ITEM_IDX, "popularity")
    model = build_model(model_spec, users_f, items_f).to(ctx.device)
    # Feature buffers never change: no need to broadcast them every step.
    net = DDP(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
              broadcast_buffers=False) \
        if ctx.distributed else model
    opt = torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t.epochs)
             if t.lr_schedule == "cosine" else torch.optim.lr_scheduler.ConstantLR(opt, 1.0, 1))
    train_users, train_items = read_pairs(paths["train"])
    counts = np.bincount(train_items, minlength=n_items)
    sampler = NegativeSampler(n_items, counts if t.negative_sampling == "popularity" else None,
                              t.popularity_alpha)
    loss_fn = LOSSES[spec["loss"]]
    k = t.eval_k

    state = {"epoch": -1, "history": [], "best": -1.0, "best_epoch": -1, "bad_epochs": 0}
    last, best = f"{spec['run_dir']}/last.pt", f"{spec['run_dir']}/best.pt"
    if spec["resume"] and fsio.exists(last):
        ckpt = load_state(last)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        state = ckpt["state"]
        log.info("resumed from %s after epoch %d", last, state["epoch"])

    evaluator, baseline = None, None
    if ctx.is_main:
        valid_users, valid_items = read_pairs(paths["valid"])
        evaluator = Evaluator(valid_users, valid_items, train_users, train_items, n_items,
                              ks=(k,), max_users=t.eval_users, seed=t.seed)
        baseline = evaluator.evaluate(popularity(train_items, n_items))
        log.info("popularity baseline: ndcg@%d %.4f over %d users", k, baseline[f"ndcg@{k}"],
                 baseline["users"])
    del train_users, train_items

    for epoch in range(state["epoch"] + 1, t.epochs):
        stats = _epoch(ctx, net, opt, loss_fn, sampler, spec, t, epoch)
        sched.step()
        record = {"epoch": epoch, **stats, "lr": opt.param_groups[0]["lr"]}
        stop = False
        if ctx.is_main:
            model.eval()
            metrics = evaluator.evaluate(lambda u: model.score_all(u, n_items), ctx.device)
            record.update({f"valid_{key}": v for key, v in metrics.items()})
            score = metrics[f"ndcg@{k}"]
            if score > state["best"]:
                state.update(best=score, best_epoch=epoch, bad_epochs=0)
                save_state(best, model.state_dict())
            else:
                state["bad_epochs"] += 1
            state["epoch"] = epoch
            state["history"].append(record)
            save_state(last, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                              "scheduler": sched.state_dict(), "state": state})
            stop = state["bad_epochs"] >= t.patience
            log.info("epoch %d: loss %.4f, %.0f samples/s, data wait %.1f%%, ndcg@%d %.4f%s",
                     epoch, record["loss"], record["samples_per_s"],
                     100 * record["data_wait_share"], k, score, " (best)" if
                     state["best_epoch"] == epoch else "")
        maybe_fail("train_epoch_end", rank=ctx.rank, epoch=epoch)
        if D.from_main(ctx, stop):
            break
    result = None
    if ctx.is_main:
        result = {"history": state["history"], "best_epoch": state["best_epoch"],
                  "best_ndcg": state["best"], "baseline": baseline, "eval_k": k,
                  "world": ctx.world, "device": str(ctx.device)}
    # TorchDistributor keeps whichever rank's return value is written last: give all the same.
    return D.from_main(ctx, result)


def _epoch(ctx: D.DistContext, net, opt, loss_fn, sampler: NegativeSampler,
           spec: dict[str, Any], t: TrainConfig, epoch: int) -> dict[str, Any]:
    """One pass over this rank's shard; every rank steps the same number of times."""
    net.train()
    torch.manual_seed(t.seed * 1_000_003 + epoch * 1009 + ctx.rank)  # dropout
    gen = torch.Generator().manual_seed(t.seed * 7919 + epoch * 31 + ctx.rank)
    rng = np.random.default_rng([t.seed, epoch, ctx.rank])
    n_items = spec["model"]["n_items"]
    steps = rows = 0
    checksum, loss_sum, wait = 0, 0.0, 0.0
    filler = None
    start = time.perf_counter()
    estimate = spec["train_rows"] // (ctx.world * t.batch_size) + 1
    with open_shard(spec["train_url"], COLUMNS, shard=ctx.rank, shards=ctx.world,
                    seed=t.seed + epoch, workers=t.reader_workers) as groups:
        batches = rebatch(groups, t.batch_size, t.shuffle_buffer, rng)
        bar = tqdm(total=estimate, desc=f"epoch {epoch}", disable=not ctx.is_main,
                   file=sys.stderr, mininterval=5, leave=False)
        while True:
            t0 = time.perf_counter()
            batch = next(batches, None)
            wait += time.perf_counter() - t0
            if not D.any_rank(ctx, batch is not None):
                break
            real = batch is not None
            if real:
                filler = {c: v[:1] for c, v in batch.items()}
            else:  # this shard is done but another is not: a zero-weight step keeps DDP in step
                batch = filler or {S.USER_IDX: np.zeros(1, np.int32),
                                   S.ITEM_IDX: np.zeros(1, np.int32),
                                   S.WEIGHT: np.ones(1, np.float32)}
            users = torch.as_tensor(batch[S.USER_IDX], dtype=torch.long)
            pos = torch.as_tensor(batch[S.ITEM_IDX], dtype=torch.long)
            weight = torch.as_tensor(batch[S.WEIGHT], dtype=torch.float32)
            weight = torch.log1p(weight.clamp(min=0)) / np.log(2.0) if t.use_weights \
                else torch.ones_like(weight)
            if not real:
                weight = torch.zeros_like(weight)
            neg = sampler.sample(len(users), t.negatives, gen)
            items = torch.cat([pos.unsqueeze(1), neg], dim=1)
            scores = net(users.to(ctx.device), items.to(ctx.device))
            loss = loss_fn(scores[:, 0], scores[:, 1:], weight.to(ctx.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            if real:
                rows += len(users)
                loss_sum += loss.item() * len(users)
                checksum = (checksum + pair_checksum(batch[S.USER_IDX], batch[S.ITEM_IDX], n_items)) \
                    % CHECKSUM_MOD
            bar.update(1)
            maybe_fail("train_step", rank=ctx.rank, epoch=epoch, step=steps)
        bar.close()
    elapsed = time.perf_counter() - start
    per_rank = D.gather(ctx, {"rows": rows, "steps": steps, "checksum": checksum,
                              "loss_sum": loss_sum, "wait": wait, "elapsed": elapsed})
    total_rows = sum(p["rows"] for p in per_rank)
    return {
        "loss": sum(p["loss_sum"] for p in per_rank) / max(1, total_rows),
        "rows": total_rows,
        "checksum": sum(p["checksum"] for p in per_rank) % CHECKSUM_MOD,
        "steps_per_rank": [p["steps"] for p in per_rank],
        "rows_per_rank": [p["rows"] for p in per_rank],
        "samples_per_s": total_rows / max(p["elapsed"] for p in per_rank),
        "data_wait_share": max(p["wait"] / max(p["elapsed"], 1e-9) for p in per_rank),
        "seconds": max(p["elapsed"] for p in per_rank),
    }

