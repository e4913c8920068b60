"""Training whose cost follows the batch, not the tables.

A step touches a few thousand rows of tables that may hold millions. Three pieces keep its cost
in proportion to those rows:
- `make_sparse`: every id table of a model (`nn.Embedding`, `nn.EmbeddingBag`) returns a sparse
  gradient, the rows its batch looked up;
- `RowAdam` (lazy Adam, as torch's SparseAdam and TF's LazyAdam) and `RowAdagrad` (row-wise
  Adagrad, as in FBGEMM's table-batched embeddings: one accumulator per row) update those rows
  only, weight decay included, and keep optimiser state for the table (Adam 2x its size,
  row-wise Adagrad one float per row);
- `GradientExchange`: between workers, the dense gradients (MLPs, attention) in one all-reduce,
  and per table only the touched rows: each worker coalesces its rows (each row once),
  all-gathers (row id, gradient) and sums them in the same order on every rank, so replicas stay
  bit-identical on the CPU. Plain collectives, so the same code runs on Gloo and NCCL (DDP's own
  sparse all-reduce exists on Gloo only).
A table whose gradient is dense (a full softmax reads every item) is exchanged and updated whole.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from recsys.config import TrainConfig


def tables(model: nn.Module) -> list[nn.Module]:
    """The id tables of `model`: every embedding, in module order."""
    return [m for m in model.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag))]


def make_sparse(model: nn.Module) -> list[Tensor]:
    """Switch every id table of `model` to sparse gradients; returns their weights."""
    for m in tables(model):
        m.sparse = True
    return [m.weight for m in tables(model)]


def touched(grad: Tensor) -> tuple[Tensor | None, Tensor]:
    """(rows, their gradient) of a table's gradient; rows None when it is dense (every row)."""
    if not grad.is_sparse:
        return None, grad
    grad = grad.coalesce()
    return grad.indices()[0], grad.values()


class RowOptimizer(torch.optim.Optimizer):
    """The loop shared by the row optimisers: for each table with a gradient, its touched rows,
    their gradient with weight decay (L2) added on those rows only, and the table's state, handed
    to `update`."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                rows, g = touched(p.grad)
                if group["weight_decay"]:
                    g = g + group["weight_decay"] * _rows(p, rows)
                self.update(p, rows, g, self.state[p], group)

    def update(self, p: Tensor, rows: Tensor | None, g: Tensor, state: dict, group: dict) -> None:
        raise NotImplementedError


class RowAdam(RowOptimizer):
    """Adam on the rows a step touched (lazy Adam): untouched rows and their moments stay as they
    are. The bias correction counts the table's steps, as SparseAdam does. Both moments of a row
    live side by side in one state row, so a step reads and writes the state in one gather and
    one scatter (random rows of a large table cost a cache miss each)."""

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    def update(self, p, rows, g, state, group) -> None:
        (b1, b2), d = group["betas"], p.shape[1]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float64)
            state["moments"] = torch.zeros(p.shape[0], 2 * d, dtype=p.dtype, device=p.device)
        state["step"] += 1
        step = float(state["step"])
        mv = _rows(state["moments"], rows)
        m, v = mv[:, :d], mv[:, d:]
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        if rows is not None:
            state["moments"].index_copy_(0, rows, mv)
        denom = v.sqrt().div_(math.sqrt(1 - b2 ** step)).add_(group["eps"])
        _apply(p, rows, m / denom, group["lr"] / (1 - b1 ** step))


class RowAdagrad(RowOptimizer):
    """Row-wise Adagrad: one accumulator per row, the mean squared gradient of the row's
    coordinates, so its state is a vector the length of the table."""

    def __init__(self, params, lr: float, eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "eps": eps, "weight_decay": weight_decay})

    def update(self, p, rows, g, state, group) -> None:
        if not state:
            state["sum"] = torch.zeros(p.shape[0], dtype=p.dtype, device=p.device)
        acc = _rows(state["sum"], rows).add_(g.pow(2).mean(1))
        if rows is not None:
            state["sum"].index_copy_(0, rows, acc)
        _apply(p, rows, g / acc.sqrt().add_(group["eps"]).unsqueeze(1), group["lr"])


def _rows(t: Tensor, rows: Tensor | None) -> Tensor:
    """`t`'s rows (a copy), or `t` itself (updated in place) when every row is touched."""
    return t if rows is None else t.index_select(0, rows)


def _apply(p: Tensor, rows: Tensor | None, update: Tensor, lr: float) -> None:
    if rows is None:
        p.add_(update, alpha=-lr)
    else:
        p.index_add_(0, rows, update, alpha=-lr)


class Optimizers:
    """Adam for the dense parameters and, with a sparse `train.optimizer`, a row optimiser for the
    id tables; one learning-rate schedule for both. Quacks like one torch optimiser for the loop."""

    def __init__(self, model: nn.Module, t: TrainConfig):
        table_weights = make_sparse(model) if t.optimizer != "adam" else []
        ids = {id(p) for p in table_weights}
        dense = [p for p in model.parameters() if id(p) not in ids]
        self.all: list[torch.optim.Optimizer] = []
        if dense:
            self.all.append(torch.optim.Adam(dense, lr=t.lr, weight_decay=t.weight_decay))
        if table_weights:
            row_optimizer = RowAdam if t.optimizer == "sparse_adam" else RowAdagrad
            self.all.append(row_optimizer(table_weights, lr=t.lr, weight_decay=t.weight_decay))
        self.schedules = [torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=t.epochs)
                          if t.lr_schedule == "cosine" else torch.optim.lr_scheduler.ConstantLR(o, 1.0, 1)
                          for o in self.all]

    @property
    def lr(self) -> float:
        return self.all[0].param_groups[0]["lr"]

    def zero_grad(self) -> None:
        for o in self.all:
            o.zero_grad(set_to_none=True)

    def step(self) -> None:
        for o in self.all:
            o.step()

    def end_epoch(self) -> None:
        for s in self.schedules:
            s.step()

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": [o.state_dict() for o in self.all],
                "schedules": [s.state_dict() for s in self.schedules]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for o, s in zip(self.all, state["optimizers"]):
            o.load_state_dict(s)
        for sched, s in zip(self.schedules, state["schedules"]):
            sched.load_state_dict(s)


class GradientExchange:
    """Averages the gradients of a model over the workers after `backward`, moving only what
    changed: the dense parameters in one flat all-reduce, and each sparse table's touched rows
    (coalesced) by an all-gather of (row id, gradient) pairs. Returns the bytes this worker sent.

    Each rank sums the gathered rows itself, in rank order, with a deterministic accumulate, so
    every rank ends with the same gradient; a table dense on any rank is all-reduced whole.
    """

    def __init__(self, model: nn.Module, world: int):
        self.world = world
        sparse_ids = {id(m.weight) for m in tables(model) if m.sparse}
        self.tables = [p for p in model.parameters() if id(p) in sparse_ids]
        self.dense = [p for p in model.parameters() if id(p) not in sparse_ids]

    def __call__(self) -> int:
        if self.world == 1:
            return 0
        return self._dense() + self._sparse()

    def _dense(self) -> int:
        if not self.dense:
            return 0
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                          for p in self.dense])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p in self.dense:
            n = p.numel()
            p.grad = flat[offset:offset + n].view_as(p)
            offset += n
        return flat.numel() * flat.element_size()

    def _sparse(self) -> int:
        if not self.tables:
            return 0
        local = [touched(p.grad) if p.grad is not None else (_EMPTY, None) for p in self.tables]
        # Rows each rank touched per table, -1 for a dense gradient: one small collective.
        counts = torch.tensor([-1 if rows is None else len(rows) for rows, _ in local],
                              device=self.tables[0].device)
        all_counts = [torch.empty_like(counts) for _ in range(self.world)]
        dist.all_gather(all_counts, counts)
        per_rank = torch.stack(all_counts).cpu()
        sent = per_rank.numel() * 8
        by_rows = []
        for j, (p, (rows, g)) in enumerate(zip(self.tables, local)):
            if bool((per_rank[:, j] < 0).any()):  # dense somewhere: the whole table
                full = g if rows is None else _dense_grad(p, rows, g)
                dist.all_reduce(full)
                p.grad = full / self.world
                sent += full.numel() * full.element_size()
            else:
                by_rows.append((p, rows, g, per_rank[:, j].tolist()))
        return sent + self._gather_rows(by_rows)

    def _gather_rows(self, tables: list[tuple[Tensor, Tensor, Tensor | None, list[int]]]) -> int:
        """All-gather the (row, gradient) pairs of every row-sparse table in one collective.

        Each table has a block of (most rows any rank touched) x (width + 2) float32 in one flat
        buffer; a row's id travels in its last two columns as the bits of an int64 (a byte copy,
        no arithmetic). Every rank then sums the gathered rows itself, in rank order.
        """
        blocks, size = [], 0
        for p, rows, g, counts in tables:
            if p.dtype != torch.float32:
                raise TypeError(f"sparse tables must be float32 to be exchanged, got {p.dtype}")
            most = max(counts)
            blocks.append((size, most))
            size += most * (p.shape[1] + 2)
        if size == 0:
            for p, *_ in tables:
                p.grad = None
            return 0
        buf = torch.zeros(size, dtype=torch.float32, device=tables[0][0].device)
        for (p, rows, g, _), (offset, most) in zip(tables, blocks):
            n, width = len(rows), p.shape[1]
            if n:
                block = buf[offset:offset + most * (width + 2)].view(most, width + 2)
                block[:n, :width] = g
                block[:n, width:] = rows.to(torch.int64).contiguous().view(torch.float32).view(n, 2)
        gathered = [torch.empty_like(buf) for _ in range(self.world)]
        dist.all_gather(gathered, buf)
        for (p, _, _, counts), (offset, most) in zip(tables, blocks):
            width = p.shape[1]
            if most == 0:
                p.grad = None
                continue
            parts = [b[offset:offset + most * (width + 2)].view(most, width + 2)[:c] for b, c in zip(gathered, counts)]
            ids = torch.cat([x[:, width:].contiguous().view(torch.int64).view(-1) for x in parts])
            vals = torch.cat([x[:, :width] for x in parts])
            unique, inverse = torch.unique(ids, sorted=True, return_inverse=True)
            summed = torch.zeros(len(unique), width, dtype=vals.dtype, device=vals.device)
            summed.index_put_((inverse,), vals, accumulate=True)  # deterministic on CPU and CUDA
            summed /= self.world
            grad = torch.sparse_coo_tensor(unique.unsqueeze(0), summed, p.shape, check_invariants=False)
            p.grad = grad._coalesced_(True)
        return buf.numel() * buf.element_size()


_EMPTY = torch.zeros(0, dtype=torch.int64)


def _dense_grad(p: Tensor, rows: Tensor, g: Tensor | None) -> Tensor:
    full = torch.zeros_like(p)
    if g is not None and len(rows):
        full.index_put_((rows.to(p.device),), g, accumulate=True)
    return full


def replica_fingerprint(model: nn.Module) -> list[float]:
    """Sum and sum of squares of every parameter (float64): equal on every rank when the
    replicas agree. Costs one pass over the tables; the loop takes it once per epoch."""
    out: list[float] = []
    for p in model.parameters():
        d = p.detach().double()
        out += [float(d.sum()), float((d * d).sum())]
    return out
