"""What a training step optimises, per kind of model, kept apart from the models (as torchrec's
DLRMTrain is): a wrapper module whose forward returns the loss, so a step calls it whole and what
is saved and served carries no training code.

Every loss takes `weight` [B], one factor per row of the batch: implicit confidence for pairs,
1 for a user's history, and 0 for the filler rows a rank feeds when its shard has run out (so
every rank takes the same number of steps without counting a row twice).

- `PairObjective` (mf, neumf, two_tower): a positive and sampled negatives per row, BPR, log
  loss or sampled softmax (`losses.py`); the softmax of a factorised model is over the whole
  catalogue when it has at most `full_softmax_max_items` items, above that over
  `train.sampled_negatives` negatives shared by the batch (logQ-corrected), so a step's cost
  and the rows it touches do not grow with the catalogue.
- `NextItemObjective` (sasrec, gru4rec): the next item at every position of the history, by
  cross-entropy over the whole catalogue, or above `full_softmax_max_items` over the positives
  and shared sampled negatives with the logQ correction (Yi et al., 2019).
- `MultVAEObjective` (multvae): the multinomial log-likelihood of the user's items plus beta x
  the KL divergence of the latent (Liang et al., 2018).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from recsys.models import Recommender
from recsys.models.autoencoders import bag


def _weighted_mean(loss: Tensor, weight: Tensor) -> Tensor:
    return (loss * weight).sum() / weight.sum().clamp(min=1e-6)


def _known_only(logits: Tensor, known: Tensor | None) -> Tensor:
    """logits [N, n_items] with the items no training row shows masked out: such an item would be
    a negative of every row and the positive of none, and learn only "never clicked" (a new
    item's content vector then says nothing of its content: issue 14)."""
    return logits if known is None else logits.masked_fill(~known, float("-inf"))


def sampled_softmax(h: Tensor, pos: Tensor, y: Tensor, neg: Tensor, negatives: Tensor,
                    log_q: Tensor) -> Tensor:
    """Cross-entropy of each positive against negatives shared by the batch: states h [N, d],
    positive vectors pos [N, d] of items y [N], negative vectors neg [K, d] of items
    `negatives` [K], log(K q_i) [n_items] subtracted from every logit (logQ correction, Yi et al.
    2019); a negative that is the row's own positive is masked out -> [N]."""
    p = (h * pos).sum(1, keepdim=True) - log_q[y].unsqueeze(1)
    n = (h @ neg.T - log_q[negatives]).masked_fill(negatives.unsqueeze(0) == y.unsqueeze(1), float("-inf"))
    return torch.logsumexp(torch.cat([p, n], dim=1), dim=1) - p.squeeze(1)


class PairObjective(nn.Module):
    """users [B], items [B, 1 + K] (the positive first), weight [B] -> loss.

    Three regimes, chosen by the task: `full` (a factorised model, the softmax loss, a catalogue
    that fits): items is [B, 1] and the positive competes with the whole catalogue; `shared`
    negatives [K] given (factorised, softmax, a larger catalogue): items is [B, 1] and every
    positive competes with the same K sampled items, so a step touches B + K item rows whatever
    the catalogue; otherwise K negatives per row scored by `loss` (BPR, log loss, softmax).
    """

    def __init__(self, model: Recommender, loss: Callable[[Tensor, Tensor, Tensor], Tensor],
                 full: bool = False, l2: float = 0.0, log_q: Tensor | None = None,
                 known: Tensor | None = None):
        super().__init__()
        self.model, self.loss, self.full, self.l2 = model, loss, full, l2
        # log(K q_i) of the negative sampler, for the shared sampled softmax.
        self.register_buffer("log_q", log_q, persistent=False)
        # [n_items] bool, the full softmax's catalogue: items the phase's rows show (None: all).
        self.register_buffer("known", known, persistent=False)

    def forward(self, users: Tensor, items: Tensor, weight: Tensor, negatives: Tensor | None = None) -> Tensor:
        if self.full:
            catalogue = torch.arange(self.model.n_items, device=users.device)
            u, i = self.model.pair_vectors(users, catalogue)
            logits = _known_only(u @ i.T, self.known)
            ce = torch.logsumexp(logits, dim=1) - logits.gather(1, items[:, :1]).squeeze(1)
            loss = _weighted_mean(ce, weight)
        elif negatives is not None:
            y = items[:, 0]
            u, i = self.model.pair_vectors(users, torch.cat([y, negatives]))
            ce = sampled_softmax(u, i[: len(y)], y, i[len(y):], negatives, self.log_q)
            loss = _weighted_mean(ce, weight)
        else:
            scores = self.model(users, items)
            loss = self.loss(scores[:, 0], scores[:, 1:], weight)
        if self.l2 > 0 and self.model.factorised:  # per occurrence, as ALS-WR weighs its penalty
            u, i = self.model.penalised(users, items[:, 0])
            loss = loss + self.l2 * _weighted_mean((u * u).sum(1) + (i * i).sum(1), weight)
        return loss


class NextItemObjective(nn.Module):
    """seq [B, L] (right-aligned, PAD -1), weight [B], optional shared negatives [K] and the log
    of each item's expected count in such a sample, log(K q_i) [n_items] (a buffer, moved to the
    device once) -> mean cross-entropy over the real (input, next) positions."""

    def __init__(self, model: Recommender, log_q: Tensor | None = None, known: Tensor | None = None):
        super().__init__()
        self.model = model
        self.register_buffer("log_q", log_q, persistent=False)
        self.register_buffer("known", known, persistent=False)  # as PairObjective's

    def forward(self, seq: Tensor, weight: Tensor, negatives: Tensor | None = None) -> Tensor:
        inputs, targets = seq[:, :-1], seq[:, 1:]
        states = self.model(inputs)  # [B, L-1, d]
        mask = (inputs >= 0) & (targets >= 0)
        h, y = states[mask], targets[mask]
        w = weight.unsqueeze(1).expand_as(mask)[mask]
        if negatives is None:
            ce = F.cross_entropy(_known_only(h @ self.model.output_table().T, self.known), y, reduction="none")
        else:  # looked up through the table: a sparse table's gradient holds these rows only
            ce = sampled_softmax(h, self.model.item_vectors(y), y, self.model.item_vectors(negatives),
                                 negatives, self.log_q)
        return _weighted_mean(ce, w)


class MultVAEObjective(nn.Module):
    """seq [B, L], weight [B], beta -> mean over users of -log-likelihood + beta * KL."""

    def __init__(self, model: Recommender):
        super().__init__()
        self.model = model

    def forward(self, seq: Tensor, weight: Tensor, beta: float) -> Tensor:
        logits, mu, logvar = self.model(seq)
        ids, real = bag(seq, self.model.n_items)
        log_p = F.log_softmax(logits, dim=1)
        nll = -(log_p.gather(1, ids.clamp(max=self.model.n_items - 1)) * real).sum(1)
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)
        return _weighted_mean(nll + beta * kl, weight)
