"""LightGCN (He et al., 2020): embeddings smoothed over the user-item graph.

One free vector per user and per item (layer 0); layer k + 1 is the normalised adjacency times
layer k, with no weights and no non-linearity; a node's representation is the mean of its
layers 0..K. Scores are dot products of those means, so the model is factorised and the score
job ranks the catalogue with one matrix product, as for mf.

A training step propagates only to the nodes its batch needs, over sampled neighbourhoods
(GraphSAGE's and PinSage's way of keeping a step's cost off the graph's size): each node
expanded reads at most `fanout` of its neighbours, drawn uniformly with replacement and
weighted deg / fanout, so each layer is an unbiased estimate of the full product given the
layer below. A node with no more neighbours than `fanout` reads them all, and `fanout=None`
reads every neighbour: the exact propagation, whose cost grows with the K-hop neighbourhood of
the batch (on a small graph, the whole graph). A step expands its users, positives and
negatives together (`pair_vectors`), so a node two of them reach is sampled and computed once
(each vector stays unbiased, though a user's and an item's now share draws; bench-quality
measured no change); it looks up, and so updates and exchanges, only the rows of the nodes it
reached. Evaluation propagates the whole graph exactly, once per switch to eval; the means are
kept in buffers (`user_out`, `item_out`), also refreshed when the state is taken, so an
artifact scores without the graph.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor, nn

from recsys.models.base import Recommender


class Graph:
    """The symmetric normalised adjacency of the bipartite graph as CSR over nodes (users
    0..n_users-1, then items): `indptr` [n + 1], `neighbours` [2E], `weights` [2E]."""

    def __init__(self, users: np.ndarray, items: np.ndarray, norm: np.ndarray, n_users: int, n_items: int):
        n = n_users + n_items
        src = np.concatenate([users, items + n_users]).astype(np.int64)
        dst = np.concatenate([items + n_users, users]).astype(np.int64)
        order = np.argsort(src, kind="stable")
        indptr = np.zeros(n + 1, np.int64)
        np.cumsum(np.bincount(src, minlength=n), out=indptr[1:])
        self.n = n
        self.indptr = torch.from_numpy(indptr)
        self.neighbours = torch.from_numpy(dst[order])
        self.weights = torch.from_numpy(np.concatenate([norm, norm]).astype(np.float32)[order])

    def to(self, device: torch.device) -> "Graph":
        for name in ("indptr", "neighbours", "weights"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def matrix(self) -> Tensor:
        """The whole adjacency as a sparse CSR tensor, for the exact propagation."""
        with warnings.catch_warnings():  # "CSR support is in beta": matmul by a dense matrix is all we use
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(self.indptr, self.neighbours, self.weights, (self.n, self.n),
                                           check_invariants=False)

    def sample(self, nodes: Tensor, fanout: int | None) -> tuple[Tensor, Tensor, Tensor]:
        """Up to `fanout` neighbours of each of `nodes` -> (position in `nodes`, neighbour,
        weight) per sampled edge; deg / fanout times the edge's weight where sampled."""
        start = self.indptr[nodes]
        degree = self.indptr[nodes + 1] - start
        take = degree if fanout is None else degree.clamp(max=fanout)
        at = torch.repeat_interleave(torch.arange(len(nodes), device=nodes.device), take)
        j = torch.arange(len(at), device=nodes.device) - torch.repeat_interleave(take.cumsum(0) - take, take)
        d = degree[at]
        whole = d == take[at]
        drawn = (torch.rand(len(at), device=nodes.device) * d).long().clamp(max=d - 1)
        pos = start[at] + torch.where(whole, j, drawn)
        scale = torch.where(whole, 1.0, d / (fanout or 1)).to(self.weights.dtype)  # None: all whole
        return at, self.neighbours[pos], self.weights[pos] * scale


class LightGCN(Recommender):
    """score(u, i) = mean_k(A^k E)_u · mean_k(A^k E)_i.

    Args: n_users, n_items, dim, layers (K propagation steps; 0 is plain MF without biases),
    fanout (neighbours read per node per layer in training; None: all).
    """

    def __init__(self, n_users: int, n_items: int, dim: int, layers: int, fanout: int | None = None):
        super().__init__()
        self.n_users, self.n_items, self.layers, self.fanout = n_users, n_items, layers, fanout
        self.node = nn.Embedding(n_users + n_items, dim)
        nn.init.normal_(self.node.weight, std=0.1)
        self.register_buffer("user_out", torch.zeros(n_users, dim))
        self.register_buffer("item_out", torch.zeros(n_items, dim))
        self.graph: Graph | None = None

    def set_graph(self, graph: Graph) -> None:
        self.graph = graph.to(self.node.weight.device)

    def propagate_to(self, targets: Tensor) -> Tensor:
        """mean_k (A^k E) at the nodes `targets` [N] -> [N, dim], with autograd, over sampled
        neighbourhoods: the nodes are numbered by the hop that reached them, so layer k is
        computed only for the nodes within K - k hops of a target, which are all it needs."""
        ids, back = torch.unique(targets, return_inverse=True)
        reached, local = ids, torch.arange(len(ids), device=ids.device)  # sorted ids, their number
        frontier, first, sizes, hops = ids, 0, [len(ids)], []
        for _ in range(self.layers):
            at, nbr, w = self.graph.sample(frontier, self.fanout)
            new = torch.unique(nbr)
            new = new[~torch.isin(new, reached)]
            ids = torch.cat([ids, new])
            reached, local = torch.cat([reached, new]), torch.cat([local, torch.arange(
                sizes[-1], sizes[-1] + len(new), device=ids.device)])
            reached, order = reached.sort()
            local = local[order]
            hops.append((first + at, local[torch.searchsorted(reached, nbr)], w))
            frontier, first = new, sizes[-1]
            sizes.append(sizes[-1] + len(new))
        layer = self.node(ids)  # layer 0 of every node reached: the rows this step touches
        total = layer[: sizes[0]]
        for k in range(1, self.layers + 1):  # layer k at the nodes within K - k hops
            rows, cols = sizes[self.layers - k], sizes[self.layers - k + 1]
            r, c, w = (torch.cat(x) for x in zip(*hops[: self.layers - k + 1]))
            a = torch.sparse_coo_tensor(torch.stack([r, c]), w, (rows, cols), check_invariants=False)
            layer = torch.sparse.mm(a, layer[:cols])
            total = total + layer[: sizes[0]]
        return (total / (self.layers + 1))[back]

    @torch.no_grad()
    def freeze(self) -> None:
        """Propagate the whole graph exactly into the buffers that scoring reads."""
        if self.graph is None:
            return
        a, layer = self.graph.matrix(), self.node.weight
        total = layer.clone()
        for _ in range(self.layers):
            layer = a @ layer
            total += layer
        total /= self.layers + 1
        self.user_out.copy_(total[: self.n_users])
        self.item_out.copy_(total[self.n_users:])

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
        return self.propagate_to(users) if self._live() else self.user_out[users]

    def item_vectors(self, items: Tensor) -> Tensor:
        return self.propagate_to(self.n_users + items) if self._live() else self.item_out[items]

    def pair_vectors(self, users: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
        """A step's users and items from one expansion: a user and their positives are
        neighbours, so their neighbourhoods overlap and are sampled, and computed, once."""
        if not self._live():
            return super().pair_vectors(users, items)
        out = self.propagate_to(torch.cat([users, self.n_users + items]))
        return out[: len(users)], out[len(users):]

    def penalised(self, users: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
        """The layer-0 rows of the batch's users and items, as the paper regularises: penalising
        the propagated means would pull every neighbour's row, not the batch's."""
        return self.node(users), self.node(self.n_users + items)
