"""What one training step reads and computes, per kind of model.

A task names the dataset a worker reads (its Petastorm columns, per phase), the batch size, and
turns a NumPy batch into a loss through its objective. The loop (`loop.py`) is the same for all:
equal steps on every rank, checkpoints, validation, refit.

- `PairTask` (mf, neumf, two_tower, lightgcn): `train` rows (user, positive item, weight), negatives
  sampled on the worker every step (above `train.full_softmax_max_items` items, from a pool of
  `train.sampled_negatives` shared by the step); the refit reads `train` and `valid`.
- `SequenceTask` (sasrec, gru4rec) and `SetTask` (multvae): `histories`, one row per user;
  the fit leaves the validation rows out of each history, the refit keeps them.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from recsys import schema as S
from recsys.config import TrainConfig
from recsys.models import Recommender
from recsys.snapshot import right_align
from recsys.train.losses import LOSSES
from recsys.train.negatives import NegativeSampler
from recsys.train.objectives import MultVAEObjective, NextItemObjective, PairObjective

Batch = dict[str, np.ndarray]
FIT, REFIT = "fit", "refit"
CHECKSUM_MOD = 2**61 - 1


def phase_counts(train: np.ndarray, valid: np.ndarray) -> dict[str, np.ndarray]:
    """Rows per item in what each phase trains on: the fit reads train, the refit train + valid."""
    return {FIT: train, REFIT: train + valid}


def pair_checksum(users: np.ndarray, items: np.ndarray, n_items: int) -> int:
    """Order-free fingerprint of a set of rows: sum of (user * n_items + item), modulo a prime."""
    keys = users.astype(np.int64) * n_items + items.astype(np.int64)
    return int(keys.sum() % CHECKSUM_MOD)


class Step(NamedTuple):
    loss: Tensor
    rows: int  # rows of the dataset this step consumed (0 for a filler step)
    checksum: int  # pair_checksum of the (user, item) pairs it trained on


class Task:
    columns: list[str]
    batch_size: int
    buffer: int
    uses_history = False

    def __init__(self, spec: dict[str, Any], t: TrainConfig, counts: dict[str, np.ndarray]):
        """`counts`: rows per item in what each phase trains on (`phase_counts`)."""
        self.spec, self.t, self.counts = spec, t, counts
        self.n_items = spec["model"]["n_items"]
        self.set_phase(FIT)

    def set_phase(self, phase: str) -> None:
        """Negatives for `phase`: drawn among, and a full softmax over, the items its rows show
        (`sampler.known`); an item no row shows is nobody's positive."""
        self.sampler = NegativeSampler(self.counts[phase], self.t.negative_sampling == "popularity",
                                       self.t.popularity_alpha)

    def objective(self, model: Recommender) -> nn.Module:
        """The loss module for the current `phase` (`set_phase` first for the refit)."""
        raise NotImplementedError

    def urls(self, phase: str) -> list[str]:
        raise NotImplementedError

    def rows(self, phase: str) -> int:
        """Rows of the datasets read in `phase` (for the progress bar)."""
        raise NotImplementedError

    def empty_batch(self) -> Batch:
        raise NotImplementedError

    def step(self, net: nn.Module, batch: Batch, real: bool, phase: str, epoch: int,
             gen: torch.Generator, device: torch.device) -> Step:
        raise NotImplementedError


def row_weights(batch: Batch, t: TrainConfig) -> Tensor:
    """A pair row's weight in the loss: log1p of its implicit weight (`train.use_weights`),
    times 0.5 ** (recency / `train.recency_half_life`) when that is set."""
    weight = torch.as_tensor(batch[S.WEIGHT], dtype=torch.float32)
    weight = torch.log1p(weight.clamp(min=0)) / np.log(2.0) if t.use_weights else torch.ones_like(weight)
    if t.recency_half_life is not None:
        age = torch.as_tensor(batch[S.RECENCY], dtype=torch.float32)
        weight = weight * torch.exp2(-age / t.recency_half_life)
    return weight


class PairTask(Task):
    def __init__(self, spec: dict[str, Any], t: TrainConfig, counts: dict[str, np.ndarray]):
        super().__init__(spec, t, counts)
        self.columns = [S.USER_IDX, S.ITEM_IDX, S.WEIGHT] + ([S.RECENCY] if t.recency_half_life else [])
        self.batch_size, self.buffer = t.batch_size, t.shuffle_buffer
        self.full = self.shared = self.pooled = False

    def objective(self, model: Recommender) -> nn.Module:
        softmax = self.spec["loss"] == "softmax" and model.factorised
        large = self.n_items > self.t.full_softmax_max_items
        self.full = softmax and not large
        self.shared = softmax and large
        # Per-row negatives (bpr, bce, a pair model's softmax) on a large catalogue: drawn from a
        # pool shared by the step, so a step touches at most B + pool item rows, not B x (1 + K).
        self.pooled = not softmax and large
        log_q = self.sampler.log_expected_counts(self.t.sampled_negatives) if self.shared else None
        return PairObjective(model, LOSSES[self.spec["loss"]], self.full, self.t.l2, log_q,
                             self.sampler.known if self.full else None)

    def urls(self, phase: str) -> list[str]:
        return [self.spec["urls"][S.TRAIN]] + ([self.spec["urls"][S.VALID]] if phase == REFIT else [])

    def rows(self, phase: str) -> int:
        return self.spec["rows"][S.TRAIN] + (self.spec["rows"][S.VALID] if phase == REFIT else 0)

    def empty_batch(self) -> Batch:
        return {S.USER_IDX: np.zeros(1, np.int32), S.ITEM_IDX: np.zeros(1, np.int32),
                S.WEIGHT: np.ones(1, np.float32), S.RECENCY: np.zeros(1, np.int32)}

    def step(self, net, batch, real, phase, epoch, gen, device) -> Step:
        t = self.t
        users = torch.as_tensor(batch[S.USER_IDX], dtype=torch.long)
        pos = torch.as_tensor(batch[S.ITEM_IDX], dtype=torch.long)
        weight = row_weights(batch, t)
        if not real:
            weight = torch.zeros_like(weight)
        negatives = None
        if self.full:  # every item is a negative: nothing to sample
            items = pos.unsqueeze(1)
        elif self.shared:
            items = pos.unsqueeze(1)
            negatives = self.sampler.sample(1, t.sampled_negatives, gen)[0].to(device)
        elif self.pooled:  # each row's K from one pool: still q-distributed, few distinct rows
            pool = self.sampler.sample(1, t.sampled_negatives, gen)[0]
            pick = torch.randint(0, len(pool), (len(users), t.negatives), generator=gen)
            items = torch.cat([pos.unsqueeze(1), pool[pick]], dim=1)
        else:
            items = torch.cat([pos.unsqueeze(1), self.sampler.sample(len(users), t.negatives, gen)], dim=1)
        loss = net(users.to(device), items.to(device), weight.to(device), negatives)
        if not real:
            return Step(loss, 0, 0)
        return Step(loss, len(users), pair_checksum(batch[S.USER_IDX], batch[S.ITEM_IDX], self.n_items))


def random_skips(items: np.ndarray, keep: np.ndarray, length: int, gen: torch.Generator) -> np.ndarray:
    """For `right_align(..., skip=)`: per row, a uniform draw over its windows of `length`
    consecutive kept entries (0 for a row with no more than `length`)."""
    windows = np.maximum((keep & (items >= 0)).sum(axis=1) - length, 0) + 1
    u = torch.rand(len(items), generator=gen, dtype=torch.float64).numpy()
    return np.minimum((u * windows).astype(np.int64), windows - 1)


class HistoryTask(Task):
    """Reads `histories`; a batch is `history_batch_size` users."""
    columns = [S.USER_IDX, S.HISTORY_ITEMS, S.HISTORY_VALID]
    uses_history = True

    def __init__(self, spec: dict[str, Any], t: TrainConfig, counts: dict[str, np.ndarray]):
        super().__init__(spec, t, counts)
        self.batch_size = t.history_batch_size
        # A history row is history_len entries wide: hold fewer rows than the pairs do.
        self.buffer = min(t.shuffle_buffer, 64 * self.batch_size)

    def urls(self, phase: str) -> list[str]:
        return [self.spec["urls"][S.HISTORIES]]

    def rows(self, phase: str) -> int:
        return self.spec["rows"][S.HISTORIES]

    def empty_batch(self) -> Batch:
        width = self.spec["history_len"]
        return {S.USER_IDX: np.zeros(1, np.int32), S.HISTORY_ITEMS: np.full((1, width), -1, np.int32),
                S.HISTORY_VALID: np.zeros((1, width), np.int8)}

    def sequences(self, batch: Batch, phase: str, gen: torch.Generator) -> np.ndarray:
        """The newest `max_len` items of each history (the fit leaves validation rows out); with
        `train.history_window: random` `max_len` items ending anywhere in it, with `all` all of it."""
        items = batch[S.HISTORY_ITEMS]
        keep = np.ones(items.shape, bool) if phase == REFIT else batch[S.HISTORY_VALID] == 0
        skip, length = None, self.t.max_len
        if self.t.history_window == "random":
            skip = random_skips(items, keep, length, gen)
        elif self.t.history_window == "all":
            length = items.shape[1]
        return right_align(items, keep, length, skip)

    def step(self, net, batch, real, phase, epoch, gen, device) -> Step:
        seq = self.sequences(batch, phase, gen)
        weight = torch.full((len(seq),), 1.0 if real else 0.0)
        loss = self.loss(net, torch.as_tensor(seq).to(device), weight.to(device), epoch, gen, device)
        if not real:
            return Step(loss, 0, 0)
        rows, cols = np.nonzero(seq >= 0)
        users = batch[S.USER_IDX][rows]
        return Step(loss, len(seq), pair_checksum(users, seq[rows, cols], self.n_items))

    def loss(self, net, seq: Tensor, weight: Tensor, epoch: int, gen: torch.Generator,
             device: torch.device) -> Tensor:
        raise NotImplementedError


class SequenceTask(HistoryTask):
    """Next item at every position: full softmax, or sampled softmax above
    `train.full_softmax_max_items` (`train.sampled_negatives` shared by the batch)."""

    def __init__(self, spec: dict[str, Any], t: TrainConfig, counts: dict[str, np.ndarray]):
        super().__init__(spec, t, counts)
        self.sampled = self.n_items > t.full_softmax_max_items

    def objective(self, model: Recommender) -> nn.Module:
        log_q = self.sampler.log_expected_counts(self.t.sampled_negatives) if self.sampled else None
        return NextItemObjective(model, log_q, None if self.sampled else self.sampler.known)

    def loss(self, net, seq, weight, epoch, gen, device) -> Tensor:
        if not self.sampled:
            return net(seq, weight)
        negatives = self.sampler.sample(1, self.t.sampled_negatives, gen)[0]
        return net(seq, weight, negatives.to(device))


class SetTask(HistoryTask):
    """MultVAE: reconstruct the user's items; KL weight annealed over `train.kl_anneal_epochs`."""

    def objective(self, model: Recommender) -> nn.Module:
        return MultVAEObjective(model)

    def loss(self, net, seq, weight, epoch, gen, device) -> Tensor:
        t = self.t
        beta = t.kl_beta * min(1.0, (epoch + 1) / max(1, t.kl_anneal_epochs))
        return net(seq, weight, beta)


TASKS = {"pairs": PairTask, "sequence": SequenceTask, "set": SetTask}
# The task each model learns with by SGD (ease and als are fitted on the driver: fitted.py).
TASK_OF = {"mf": "pairs", "neumf": "pairs", "two_tower": "pairs", "lightgcn": "pairs",
           "sasrec": "sequence", "gru4rec": "sequence", "multvae": "set"}

