"""Negative items sampled on the worker, fresh every step: uniform or by popularity ** alpha,
over the items the phase's rows show at least once."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


class NegativeSampler:
    """Draws [B, K] item ids with replacement (an accidental positive is rare and harmless).

    Only items with a count above zero are drawn: an item no training row shows (a new catalogue
    entry, or one seen only in the validation rows during the fit) would otherwise be a negative
    at every step and never a positive, and learn nothing but "never clicked" (issue 14: all new
    items collapsed onto one vector). Drawing inverts the cumulative distribution with
    `searchsorted`, one vectorised call per batch.
    """

    def __init__(self, counts: np.ndarray, popularity: bool = False, alpha: float = 0.75):
        self.n_items = len(counts)
        known = counts > 0 if (counts > 0).any() else np.ones(len(counts), bool)
        # [n_items] bool, the items that can be drawn; None: all of them.
        self.known = None if known.all() else torch.as_tensor(known)
        self.cdf = None
        if popularity:
            w = np.power(counts.astype(np.float64) + 1.0, alpha) * known
        elif self.known is not None:
            w = known.astype(np.float64)
        else:
            return  # uniform over the whole catalogue: no table needed
        c = np.cumsum(w)
        self.cdf = torch.as_tensor(c / c[-1], dtype=torch.float64)  # exactly 1 from the last drawable item on

    def probabilities(self) -> Tensor:
        """[n_items] the probability of drawing each item."""
        if self.cdf is None:
            return torch.full((self.n_items,), 1.0 / self.n_items, dtype=torch.float64)
        return torch.diff(self.cdf, prepend=torch.zeros(1, dtype=torch.float64))

    def log_expected_counts(self, k: int) -> Tensor:
        """[n_items] log(k q_i): the logQ correction of a sampled softmax over k draws (-inf for an
        item never drawn, which is never looked up: it is nobody's positive either)."""
        return torch.log(k * self.probabilities()).float()

    def sample(self, batch: int, k: int, generator: torch.Generator) -> Tensor:
        if self.cdf is None:
            return torch.randint(0, self.n_items, (batch, k), generator=generator)
        u = torch.rand(batch, k, generator=generator, dtype=torch.float64)
        # side="right": an item of probability 0 (cdf equal to its predecessor's) is never hit.
        return torch.searchsorted(self.cdf, u, right=True).clamp_(max=self.n_items - 1)
