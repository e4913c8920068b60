"""The training function TorchDistributor runs on every worker.

`train_worker(spec)` knows nothing about Spark: it reads its shard with Petastorm, steps the
model (its gradients averaged over the workers by `sparse.GradientExchange`), validates on
rank 0, checkpoints every epoch and returns the history. Two phases:
- `fit`: on the training split, with early stopping on validation NDCG@K, which picks the
  number of epochs;
- `refit` (`train.refit`, on by default): from the same initial weights, that many epochs on
  train + valid, without validation. These are the weights that are published: the model has
  seen everything it will be asked about; the gate still uses the fit's validation numbers.
Seeds are derived from (seed, epoch, rank) at the start of each epoch, so a run resumed from a
checkpoint (in either phase) continues exactly as the uninterrupted run would have.
"""
from __future__ import annotations

import io
import logging
import resource
import sys
import time
import warnings
from typing import Any

import numpy as np
import torch

from recsys import fsio
from recsys import schema as S
from recsys.config import TrainConfig
from recsys.faults import maybe_fail
from recsys.models import build_model
from recsys.models.features import load_features
from recsys.models.graph import Graph
from recsys.snapshot import read_graph
from recsys.train import distributed as D
from recsys.train import failures
from recsys.train.progress import Progress
from recsys.train.reader import open_shards, rebatch
from recsys.train.sparse import GradientExchange, Optimizers, replica_fingerprint
from recsys.train.tasks import CHECKSUM_MOD, FIT, REFIT, TASKS, Task, phase_counts
from recsys.train.validation import Validation, item_counts

log = logging.getLogger("recsys.train")


def save_state(path: str, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    fsio.write_bytes(path, buf.getvalue())


def load_state(path: str) -> dict[str, Any]:
    """Only tensors and plain containers: `weights_only=True`, never arbitrary pickle."""
    return torch.load(io.BytesIO(fsio.read_bytes(path)), weights_only=True, map_location="cpu")


def train_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Entry point of each worker; every rank returns rank 0's result."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("petastorm").setLevel(logging.WARNING)
    # Petastorm's reader threads use pyarrow 14's legacy API on purpose (see DESIGN.md).
    warnings.filterwarnings("ignore", category=FutureWarning)
    ctx = D.init(spec["use_gpu"])
    # TorchDistributor reports only that training failed; leave the cause for the driver.
    failures.watch_for_termination(spec["run_dir"], ctx.rank)
    try:
        return _train(ctx, spec)
    except BaseException as exc:
        failures.report_error(spec["run_dir"], ctx.rank, exc)
        raise
    finally:
        D.shutdown(ctx)


class Run:
    """A model, its objective and optimisers, built from the same seed each time, so the refit
    starts from exactly the weights the fit started from. The objective is what a step calls;
    after `backward`, `exchange` averages the gradients over the workers (sparse.py)."""

    def __init__(self, ctx: D.DistContext, spec: dict[str, Any], t: TrainConfig, task: Task,
                 features: tuple, phase: str = FIT):
        torch.manual_seed(t.seed)  # the same initial weights on every rank, and in each phase
        self.model = build_model(spec["model"], *features).to(ctx.device)
        if spec["model"]["model"] == "lightgcn":  # the fit's graph has no validation edges
            m = spec["model"]
            edges = read_graph(spec["paths"][S.GRAPH], refit=phase == REFIT)
            self.model.set_graph(Graph(*edges, m["n_users"], m["n_items"]))
        task.set_phase(phase)
        self.net = task.objective(self.model).to(ctx.device)
        self.opt = Optimizers(self.net, t)  # switches the id tables to sparse gradients
        self.exchange = GradientExchange(self.net, ctx.world)

    def state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict()}

    def load(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])


def _train(ctx: D.DistContext, spec: dict[str, Any]) -> dict[str, Any]:
    t = TrainConfig(**spec["train"])
    paths, n_items = spec["paths"], spec["model"]["n_items"]
    features: tuple = ()
    if spec["model"]["model"] == "two_tower":
        features = (load_features(paths[S.USERS], S.USER_IDX, "n_train"),
                    load_features(paths[S.ITEMS], S.ITEM_IDX, "popularity"))
    elif spec["model"].get("item_features"):  # a sequence model with train.item_content
        features = (None, load_features(paths[S.ITEMS], S.ITEM_IDX, "popularity"))
    counts = phase_counts(item_counts(paths[S.TRAIN], n_items), item_counts(paths[S.VALID], n_items))
    task = TASKS[spec["task"]](spec, t, counts)
    validation = Validation(paths, n_items, t, task.uses_history) if ctx.is_main else None
    run = Run(ctx, spec, t, task, features)

    state = {"phase": FIT, "epoch": -1, "history": [], "refit": [], "best": -1.0, "best_epoch": -1,
             "bad_epochs": 0}
    last, best = f"{spec['run_dir']}/last.pt", f"{spec['run_dir']}/best.pt"
    if spec["resume"] and fsio.exists(last):
        ckpt = load_state(last)
        if ckpt["state"]["phase"] == REFIT:
            run = Run(ctx, spec, t, task, features, REFIT)
        run.load(ckpt)
        state = ckpt["state"]
        log.info("resumed from %s after %s epoch %d", last, state["phase"], state["epoch"])

    if state["phase"] == FIT:
        stop = state["bad_epochs"] >= t.patience  # a resumed run that had already stopped
        for epoch in range(state["epoch"] + 1, t.epochs):
            if stop:
                break
            stats = _epoch(ctx, run, task, t, FIT, epoch)
            run.opt.end_epoch()
            record = {"epoch": epoch, **stats, "lr": run.opt.lr}
            if ctx.is_main:
                metrics = validation.evaluate(run.model, ctx.device)
                record.update({f"valid_{key}": v for key, v in metrics.items()})
                score = metrics[f"ndcg@{t.eval_k}"]
                eligible = epoch + 1 >= min(t.min_epochs, t.epochs)  # before: neither chosen nor stopped
                if eligible and score > state["best"]:
                    state.update(best=score, best_epoch=epoch, bad_epochs=0)
                    save_state(best, run.model.state_dict())
                elif eligible:
                    state["bad_epochs"] += 1
                state["epoch"] = epoch
                state["history"].append(record)
                save_state(last, {**run.state(), "state": state})
                stop = state["bad_epochs"] >= t.patience
                log.info("epoch %d: loss %.4f, %.0f rows/s, data wait %.1f%%, ndcg@%d %.4f%s",
                         epoch, record["loss"], record["samples_per_s"],
                         100 * record["data_wait_share"], t.eval_k, score,
                         " (best)" if state["best_epoch"] == epoch else "")
            maybe_fail("train_epoch_end", rank=ctx.rank, epoch=epoch, phase=FIT)
            stop = D.from_main(ctx, stop)
        if t.refit:
            state.update(phase=REFIT, epoch=-1)
            run = Run(ctx, spec, t, task, features, REFIT)

    if t.refit:
        epochs = D.from_main(ctx, state["best_epoch"] + 1)
        for epoch in range(state["epoch"] + 1, epochs):
            stats = _epoch(ctx, run, task, t, REFIT, epoch)
            run.opt.end_epoch()
            if ctx.is_main:
                state["refit"].append({"epoch": epoch, **stats, "lr": run.opt.lr})
                state["epoch"] = epoch
                save_state(last, {**run.state(), "state": state})
                log.info("refit epoch %d of %d: loss %.4f, %.0f rows/s", epoch, epochs - 1,
                         stats["loss"], stats["samples_per_s"])
            maybe_fail("train_epoch_end", rank=ctx.rank, epoch=epoch, phase=REFIT)
        if ctx.is_main:
            save_state(f"{spec['run_dir']}/refit.pt", run.model.state_dict())
    result = None
    if ctx.is_main:
        result = {"history": state["history"], "refit": state["refit"] if t.refit else None,
                  "best_epoch": state["best_epoch"], "best_ndcg": state["best"],
                  "baseline": validation.baseline, "eval_k": t.eval_k,
                  "world": ctx.world, "device": str(ctx.device)}
    # TorchDistributor keeps whichever rank's return value is written last: give all the same.
    return D.from_main(ctx, result)


def _epoch(ctx: D.DistContext, run: Run, task: Task, t: TrainConfig, phase: str,
           epoch: int) -> dict[str, Any]:
    """One pass over this rank's shard; every rank steps the same number of times."""
    D.barrier(ctx)  # rank 0 may have been validating: start the clocks together
    run.net.train()
    torch.manual_seed(t.seed * 1_000_003 + epoch * 1009 + ctx.rank)  # dropout
    gen = torch.Generator().manual_seed(t.seed * 7919 + epoch * 31 + ctx.rank)
    rng = np.random.default_rng([t.seed, epoch, ctx.rank])
    steps = rows = sent = 0
    checksum, loss_sum, wait = 0, 0.0, 0.0
    spent = np.zeros(4)  # seconds in forward, backward, exchange, optimiser
    filler = None
    start = time.perf_counter()
    estimate = task.rows(phase) // (ctx.world * task.batch_size) + 1
    progress = Progress(f"{phase} epoch {epoch}", estimate, t.progress_seconds, ctx.is_main, unit="samples")
    with open_shards(task.urls(phase), task.columns, shard=ctx.rank, shards=ctx.world,
                     seed=t.seed + epoch, workers=t.reader_workers) as groups:
        batches = rebatch(groups, task.batch_size, task.buffer, rng)
        t0 = time.perf_counter()
        batch = next(batches, None)
        wait += time.perf_counter() - t0
        more = D.any_rank(ctx, batch is not None)
        while more:  # every rank steps while any rank has a batch
            real = batch is not None
            if real:
                filler = {c: v[:1] for c, v in batch.items()}
            else:  # this shard is done but another is not: a zero-weight step keeps the ranks in step
                batch = filler or task.empty_batch()
            t1 = time.perf_counter()
            step = task.step(run.net, batch, real, phase, epoch, gen, ctx.device)
            run.opt.zero_grad()
            t2 = time.perf_counter()
            step.loss.backward()
            t3 = time.perf_counter()
            batch = next(batches, None)  # read before the exchange, which tells every rank if any has one
            t4 = time.perf_counter()
            exchanged = run.exchange(more=batch is not None)
            sent, more = sent + exchanged.sent, exchanged.more
            t5 = time.perf_counter()
            run.opt.step()
            wait += t4 - t3
            spent += np.array([t2 - t1, t3 - t2, t5 - t4, time.perf_counter() - t5])
            steps += 1
            if real:
                rows += step.rows
                loss_sum += step.loss.item() * step.rows
                checksum = (checksum + step.checksum) % CHECKSUM_MOD
            progress.update(steps, rows)
            maybe_fail("train_step", rank=ctx.rank, epoch=epoch, step=steps)
    elapsed = time.perf_counter() - start
    per_rank = D.gather(ctx, {"rows": rows, "steps": steps, "checksum": checksum, "sent": sent,
                              "spent": (spent / max(elapsed, 1e-9)).round(3).tolist(),
                              "loss_sum": loss_sum, "wait": wait, "elapsed": elapsed,
                              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                              "replica": replica_fingerprint(run.model)})
    identical = all(p["replica"] == per_rank[0]["replica"] for p in per_rank)
    if not identical and ctx.is_main:
        log.warning("%s epoch %d: the workers' copies of the model differ (a bug in the gradient exchange?)",
                    phase, epoch)
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
        "bytes_sent_per_step": max(p["sent"] / max(1, p["steps"]) for p in per_rank),
        # shares of the epoch per rank: forward, backward, gradient exchange, optimiser step
        "step_shares_per_rank": [p["spent"] for p in per_rank],
        "peak_rss_mb_per_rank": [round(p["peak_rss_mb"]) for p in per_rank],
        "replicas_identical": identical,
        "optimizer": t.optimizer,
    }
