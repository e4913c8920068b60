"""Training whose cost follows the batch, not the tables.

A step touches a few thousand rows of tables that may hold millions. Three pieces keep its cost
in proportion to those rows:
- `make_sparse`: every id table of a model (`nn.Embedding`, `nn.EmbeddingBag`) returns a sparse
  gradient, the rows its batch looked up;
- `RowAdam` (lazy Adam, as torch's SparseAdam and TF's LazyAdam) and `RowAdagrad` (row-wise
  Adagrad, as in FBGEMM's table-batched embeddings: one accumulator per row) update those rows
  only, weight decay included, and keep optimiser state for the table (Adam 2x its size,
  row-wise Adagrad one float per row). Gathering and scattering random rows is most of their
  cost, so row-wise Adagrad, which has one row to move where Adam has three, is the faster;
- `GradientExchange`: between workers, the dense gradients (MLPs, attention) in one all-reduce,
  and per table only the touched rows: each worker coalesces its rows (each row once),
  all-gathers (row id, gradient) (by an all-to-all, faster on Gloo) and sums them in the same
  order on every rank, so replicas stay bit-identical on the CPU. Plain collectives, so the
  same code runs on Gloo and NCCL (DDP's own sparse all-reduce exists on Gloo only). Whether
  a worker has another batch rides along, so a step costs two collectives, not three.
A table whose gradient is dense (a full softmax reads every item) is exchanged and updated whole.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.autograd.graph import increment_version
from torch.optim.adam import adam

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
    """The loop shared by the row optimisers: for each table with a gradient, its touched rows
    and their gradient, handed with the table's state to `update`, which applies weight decay
    (L2) to those rows only."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    rows, g = touched(p.grad)
                    self.update(p, rows, g, self.state[p], group)

    def update(self, p: Tensor, rows: Tensor | None, g: Tensor, state: dict, group: dict) -> None:
        raise NotImplementedError


class RowAdam(RowOptimizer):
    """Adam on the rows a step touched (lazy Adam): untouched rows and their moments stay as they
    are. The bias correction counts the table's steps, as SparseAdam does. A step gathers the
    rows of the table and of both moments, updates them in one pass of torch's fused Adam kernel
    and scatters them back: random rows of a large table cost a cache miss each, so a step reads
    and writes each row once."""

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    def update(self, p, rows, g, state, group) -> None:
        if "moments" in state:  # a checkpoint of the layout before: both moments side by side
            d = p.shape[1]
            state["exp_avg"], state["exp_avg_sq"] = (x.contiguous() for x in state.pop("moments").split(d, 1))
            state["step"] = state["step"].to(torch.float32)
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32)
            state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
        w, m, v = (_rows(x, rows) for x in (p, state["exp_avg"], state["exp_avg_sq"]))
        adam([w], [g], [m], [v], [], [state["step"]], fused=p.device.type in ("cpu", "cuda"),
             amsgrad=False, beta1=group["betas"][0], beta2=group["betas"][1], lr=group["lr"],
             weight_decay=group["weight_decay"], eps=group["eps"], maximize=False, capturable=False,
             differentiable=False, grad_scale=None, found_inf=None, has_complex=False)
        if rows is None:  # updated in place by a kernel that autograd does not see: say so, so
            increment_version(p)  # nothing saved for backward looks current
        else:
            for table, x in ((p, w), (state["exp_avg"], m), (state["exp_avg_sq"], v)):
                table.index_put_((rows,), x)


class RowAdagrad(RowOptimizer):
    """Row-wise Adagrad: one accumulator per row, the mean squared gradient of the row's
    coordinates, so its state is a vector the length of the table."""

    def __init__(self, params, lr: float, eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "eps": eps, "weight_decay": weight_decay})

    def update(self, p, rows, g, state, group) -> None:
        if not state:
            state["sum"] = torch.zeros(p.shape[0], dtype=p.dtype, device=p.device)
        w = _rows(p, rows)
        if group["weight_decay"]:
            g = g.add(w, alpha=group["weight_decay"])
        acc = _rows(state["sum"], rows).add_(g.pow(2).mean(1))
        w.addcdiv_(g, acc.sqrt().add_(group["eps"]).unsqueeze(1), value=-group["lr"])
        if rows is not None:
            p.index_put_((rows,), w)
            state["sum"].index_put_((rows,), acc)


def _rows(t: Tensor, rows: Tensor | None) -> Tensor:
    """`t`'s rows (a copy, scattered back with `index_put_`: a third of `index_add_`'s cost on
    the CPU), or `t` itself (updated in place) when every row is touched."""
    return t if rows is None else t.index_select(0, rows)


class Optimizers:
    """Adam for the dense parameters and, with a sparse `train.optimizer`, a row optimiser for the
    id tables at `train.table_lr` (null: `train.lr`); one learning-rate schedule for both.
    Quacks like one torch optimiser for the loop."""

    def __init__(self, model: nn.Module, t: TrainConfig):
        table_weights = make_sparse(model) if t.optimizer != "adam" else []
        ids = {id(p) for p in table_weights}
        dense = [p for p in model.parameters() if id(p) not in ids]
        self.all: list[torch.optim.Optimizer] = []
        if dense:
            self.all.append(torch.optim.Adam(dense, lr=t.lr, weight_decay=t.weight_decay))
        if table_weights:
            row_optimizer = RowAdam if t.optimizer == "sparse_adam" else RowAdagrad
            self.all.append(row_optimizer(table_weights, lr=t.table_lr or t.lr, weight_decay=t.weight_decay))
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


class Exchanged(NamedTuple):
    sent: int  # bytes this worker sent
    more: bool  # whether any worker has another batch


class GradientExchange:
    """Averages the gradients of a model over the workers after `backward`, moving only what
    changed: the dense parameters in one flat all-reduce, and each sparse table's touched rows
    (coalesced) by an all-gather of (row id, gradient) pairs.

    Each rank sums the gathered rows itself, in rank order, with a deterministic accumulate, so
    every rank ends with the same gradient; a table dense on any rank is all-reduced whole.
    Whether this worker has another batch (`more`) rides in the first collective, so the loop
    learns whether any worker does without a collective of its own each step.
    """

    def __init__(self, model: nn.Module, world: int):
        self.world = world
        sparse_ids = {id(m.weight) for m in tables(model) if m.sparse}
        self.tables = [p for p in model.parameters() if id(p) in sparse_ids]
        self.dense = [p for p in model.parameters() if id(p) not in sparse_ids]
        params = self.tables or self.dense
        self.device = params[0].device if params else torch.device("cpu")

    def __call__(self, more: bool = False) -> Exchanged:
        if self.world == 1:
            return Exchanged(0, more)
        if not self.tables:  # the flag rides in the dense all-reduce
            return Exchanged(*self._dense(more))
        sent, more = self._sparse(more)
        return Exchanged(sent + self._dense(None)[0], more)

    def _dense(self, more: bool | None) -> tuple[int, bool | None]:
        """All-reduce the dense gradients, with `more` as one extra element when given."""
        parts = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in self.dense]
        if more is not None:
            parts.append(torch.tensor([float(more)], device=self.device))
        if not parts:
            return 0, None
        flat = torch.cat(parts)
        dist.all_reduce(flat)
        any_more = None if more is None else bool(flat[-1] > 0)
        flat /= self.world
        offset = 0
        for p in self.dense:
            n = p.numel()
            p.grad = flat[offset:offset + n].view_as(p)
            offset += n
        return flat.numel() * flat.element_size(), any_more

    def _sparse(self, more: bool) -> tuple[int, bool]:
        local = [touched(p.grad) if p.grad is not None else (_EMPTY, None) for p in self.tables]
        # Rows each rank touched per table (-1 for a dense gradient) and its `more`: one small collective.
        counts = torch.tensor([-1 if rows is None else len(rows) for rows, _ in local] + [int(more)],
                              device=self.device)
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
        return sent + self._gather_rows(by_rows), bool(per_rank[:, -1].any())

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
        gathered = _all_gather(buf, self.world)
        for (p, _, _, counts), (offset, most) in zip(tables, blocks):
            width = p.shape[1]
            if most == 0:
                p.grad = None
                continue
            parts = [b[offset:offset + most * (width + 2)].view(most, width + 2)[:c] for b, c in zip(gathered, counts)]
            # cat makes a fresh buffer: a view into the gathered one may start at an odd float
            ids = torch.cat([x[:, width:] for x in parts]).view(torch.int64).view(-1)
            vals = torch.cat([x[:, :width] for x in parts])
            unique, inverse = torch.unique(ids, sorted=True, return_inverse=True)
            summed = torch.zeros(len(unique), width, dtype=vals.dtype, device=vals.device)
            if summed.is_cuda:  # CUDA's index_add_ uses atomics (order varies); this path sorts
                summed.index_put_((inverse,), vals, accumulate=True)
            else:  # sequential in index order on the CPU, and half index_put_'s cost there
                summed.index_add_(0, inverse, vals)
            summed /= self.world
            grad = torch.sparse_coo_tensor(unique.unsqueeze(0), summed, p.shape, check_invariants=False)
            p.grad = grad._coalesced_(True)
        return buf.numel() * buf.element_size()


_EMPTY = torch.zeros(0, dtype=torch.int64)


def _all_gather(buf: Tensor, world: int) -> list[Tensor]:
    """Every rank's `buf` (all the same size), in rank order: an all-gather done as one
    all-to-all whose input is `buf` once per rank. The same bytes move, but Gloo's all-to-all
    moves them in about two thirds of its all-gather's time (`make bench-exchange`)."""
    out = torch.empty(world * buf.numel(), dtype=buf.dtype, device=buf.device)
    dist.all_to_all_single(out, buf.repeat(world))
    return list(out.view(world, -1))


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
