"""LightGCN (He et al., 2020): embeddings smoothed over the user-item graph.

One free vector per user and per item (layer 0); layer k + 1 is the normalised adjacency times
layer k, with no weights and no non-linearity; a node's representation is the mean of its
layers 0..K. Scores are dot products of those means, so the model is factorised and the score
job ranks the catalogue with one matrix product, as for mf.

Training needs the graph (`set_graph`, from the snapshot's `graph` dataset) and propagates it
whole on every step: the cost of a step grows with the number of edges, which is why the train
job refuses a graph above `train.graph_max_edges`. The propagated means are kept in buffers
(`user_out`, `item_out`), refreshed whenever the model is switched to eval or its state is
taken, so an artifact scores without the graph.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from recsys.models.base import Recommender


def adjacency(users: np.ndarray, items: np.ndarray, norm: np.ndarray, n_users: int, n_items: int) -> Tensor:
    """The symmetric (n_users + n_items)^2 sparse adjacency of the edges (u, i) with weight `norm`."""
    u = torch.as_tensor(users, dtype=torch.long)
    i = torch.as_tensor(items, dtype=torch.long) + n_users
    w = torch.as_tensor(norm, dtype=torch.float32)
    idx = torch.stack([torch.cat([u, i]), torch.cat([i, u])])
    n = n_users + n_items
    return torch.sparse_coo_tensor(idx, torch.cat([w, w]), (n, n), check_invariants=False).coalesce()


class LightGCN(Recommender):
    """score(u, i) = mean_k(A^k E)_u · mean_k(A^k E)_i.

    Args: n_users, n_items, dim, layers (K propagation steps; 0 is plain MF without biases).
    """

    def __init__(self, n_users: int, n_items: int, dim: int, layers: int):
        super().__init__()
        self.n_users, self.n_items, self.layers = n_users, n_items, layers
        self.node = nn.Embedding(n_users + n_items, dim)
        nn.init.normal_(self.node.weight, std=0.1)
        self.register_buffer("user_out", torch.zeros(n_users, dim))
        self.register_buffer("item_out", torch.zeros(n_items, dim))
        self.graph: Tensor | None = None
        self._cache: tuple[int, Tensor] | None = None  # (weight version, propagated) of this step

    def set_graph(self, graph: Tensor) -> None:
        self.graph = graph.to(self.node.weight.device)
        self._cache = None

    def propagate(self) -> Tensor:
        """mean_k A^k E over k = 0..K -> [n_users + n_items, dim], with autograd."""
        version = self.node.weight._version
        if self._cache is not None and self._cache[0] == version and torch.is_grad_enabled():
            return self._cache[1]  # the user and item sides of one step share one propagation
        layer = self.node.weight
        total = layer
        for _ in range(self.layers):
            layer = self.graph @ layer
            total = total + layer
        out = total / (self.layers + 1)
        self._cache = (version, out) if torch.is_grad_enabled() else None
        return out

    @torch.no_grad()
    def freeze(self) -> None:
        """Write the propagated means into the buffers that scoring reads."""
        if self.graph is None:
            return
        out = self.propagate()
        self.user_out.copy_(out[: self.n_users])
        self.item_out.copy_(out[self.n_users:])

    def train(self, mode: bool = True) -> "LightGCN":
        super().train(mode)
        if not mode:
            self.freeze()
        return self

    def state_dict(self, *args, **kwargs):
        self.freeze()
        return super().state_dict(*args, **kwargs)

    def _live(self) -> bool:
        return self.training and self.graph is not None

    def user_vectors(self, users: Tensor) -> Tensor:
        return self.propagate()[users] if self._live() else self.user_out[users]

    def item_vectors(self, items: Tensor) -> Tensor:
        return self.propagate()[self.n_users + items] if self._live() else self.item_out[items]

    def penalised(self, users: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
        """The layer-0 rows of the batch's users and items, as the paper regularises: penalising
        the propagated means would pull every neighbour's row, not the batch's. Indexed from the
        weight (not looked up), so its gradient is dense like the propagation's."""
        weight = self.node.weight
        return weight[users], weight[self.n_users + items]
