"""Negative items sampled on the worker, fresh every step: uniform or by popularity ** alpha."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


class NegativeSampler:
    """Draws [B, K] item ids with replacement (an accidental positive is rare and harmless).

    Popularity sampling inverts the cumulative distribution with `searchsorted`, one vectorised
    call per batch.
    """

    def __init__(self, n_items: int, popularity: np.ndarray | None = None, alpha: float = 0.75):
        self.n_items = n_items
        self.cdf = None
        if popularity is not None:
            w = np.power(popularity.astype(np.float64) + 1.0, alpha)
            self.cdf = torch.as_tensor(np.cumsum(w) / w.sum(), dtype=torch.float64)

    def probabilities(self) -> Tensor:
        """[n_items] the probability of drawing each item."""
        if self.cdf is None:
            return torch.full((self.n_items,), 1.0 / self.n_items, dtype=torch.float64)
        return torch.diff(self.cdf, prepend=torch.zeros(1, dtype=torch.float64))

    def log_expected_counts(self, k: int) -> Tensor:
        """[n_items] log(k q_i): the logQ correction of a sampled softmax over k draws."""
        return torch.log(k * self.probabilities()).float()

    def sample(self, batch: int, k: int, generator: torch.Generator) -> Tensor:
        if self.cdf is None:
            return torch.randint(0, self.n_items, (batch, k), generator=generator)
        u = torch.rand(batch, k, generator=generator, dtype=torch.float64)
        return torch.searchsorted(self.cdf, u).clamp_(max=self.n_items - 1)
