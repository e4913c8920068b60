"""Why each row was recommended: a short `reason` code and, where the model's own item-item
similarity names one, `because_item_id`, the item of the user's history that most supports it.

The similarity is the one the model scores with, so the reason explains the score rather than a
second opinion: the cosine of the two items' vectors for a factorised model (mf, lightgcn,
two_tower, and sasrec/gru4rec/multvae, whose output item vectors are what a user's state is
matched against), the candidate vectors of a two-stage model (neumf's GMF), and for EASE the
exact contribution B[h, i] of history item h to item i's score. A blend adds its members'
similarities, each scaled to [-1, 1] per row and weighed by the member's weight.

Cost per user: top_n x reason_history x dim multiply-adds (bench-score records it against the
scoring without reasons), computed in blocks of users so the gathered vectors stay small.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from recsys.models.autoencoders import EASE
from recsys.models.base import PAD, Recommender

# Codes, in the order the writer's dictionary stores them.
REASONS = ("similar_to_history", "new_item", "user_features", "popular", "model")
SIMILAR, NEW_ITEM, USER_FEATURES, POPULAR, MODEL = range(len(REASONS))
# A source (how the user was scored) -> the reason of rows that no history item explains.
BY_SOURCE = {"popular": POPULAR, "opted_out": POPULAR, "features": USER_FEATURES, "model": MODEL}
BLOCK_USERS = 1024


class _Part:
    """One similarity: unit item vectors [n_items, d] (`vectors`, `inv_norm`), or EASE's B."""

    def __init__(self, weight: float, vectors: Tensor | None = None, pairs: Tensor | None = None):
        self.weight, self.vectors, self.pairs = weight, vectors, pairs
        if vectors is not None:  # inverse norms only: the vectors are the scorer's, not a copy
            self.inv_norm = 1.0 / vectors.norm(dim=1).clamp(min=1e-12)

    def __call__(self, rec: Tensor, hist: Tensor) -> Tensor:
        """rec [B, N], hist [B, H] (PAD on the left) -> similarity [B, N, H], 0 at a PAD."""
        pad = hist == PAD
        if self.pairs is not None:  # B[h, i]: what history item h adds to item i's score
            rows = hist.masked_fill(pad, len(self.pairs) - 1)  # EASE's last row is all zeros
            return self.pairs[rows.unsqueeze(1), rec.unsqueeze(2)]
        # The cosine up to the recommended item's norm, which is the same for every h: the
        # choice of h (and the sign) is the cosine's, without normalising N vectors per user.
        h = hist.clamp(min=0)
        scale = self.inv_norm[h].masked_fill(pad, 0.0)
        h = F.embedding(h, self.vectors) * scale.unsqueeze(-1)
        return torch.bmm(F.embedding(rec, self.vectors), h.transpose(1, 2))


class Reasons:
    """`explain(items, scores, history, source)` for the batches of one Scorer.

    Args: the scorer's model; `item_vectors`: the vectors it scores with (None for EASE), or one
    entry per member of a blend; `new_items`: [n_items] bool of items without interactions.
    """

    def __init__(self, model: Recommender, item_vectors: Tensor | list[Tensor | None] | None,
                 new_items: np.ndarray | None = None):
        members = list(model.members) if hasattr(model, "members") else [model]
        weights = model.weights.tolist() if hasattr(model, "members") else [1.0]
        vectors = item_vectors if isinstance(item_vectors, list) else [item_vectors]
        self.parts = []
        for member, weight, v in zip(members, weights, vectors):
            if v is not None:
                self.parts.append(_Part(weight, vectors=v))
            elif isinstance(member, EASE):
                self.parts.append(_Part(weight, pairs=member.weights))
        self.new_items = torch.as_tensor(new_items) if new_items is not None else None

    def similarity(self, rec: Tensor, hist: Tensor) -> Tensor:
        if len(self.parts) == 1:
            return self.parts[0](rec, hist)
        total = None
        for part in self.parts:  # each member's similarity on one scale before they are added
            s = part(rec, hist)
            s = s / s.abs().amax(dim=2, keepdim=True).clamp(min=1e-12) * part.weight
            total = s if total is None else total + s
        return total

    @torch.no_grad()
    def explain(self, items: np.ndarray, scores: np.ndarray, history: np.ndarray,
                source: str) -> tuple[np.ndarray, np.ndarray]:
        """items, scores [B, N] (the ranked lists; -inf marks no row), history [B, H] (newest
        items, PAD on the left) -> (because [B, N] item_idx or -1, reason [B, N] int8 codes).

        A row is `similar_to_history` when some history item is positively similar to it,
        `new_item` when the item has no interactions (its `because` is still the most similar
        history item, if any), else the source's own code."""
        reason = np.full(items.shape, BY_SOURCE.get(source, MODEL), np.int8)
        because = np.full(items.shape, -1, np.int64)
        if source == "model" and self.parts and history.shape[1]:
            for start in range(0, len(items), BLOCK_USERS):
                rows = slice(start, start + BLOCK_USERS)
                rec = torch.as_tensor(items[rows]).clamp(min=0)
                hist = torch.as_tensor(history[rows])
                best, at = self.similarity(rec, hist).max(dim=2)  # a PAD's 0 is never > 0
                found = (best > 0).numpy()
                chosen = hist.gather(1, at).numpy()
                because[rows] = np.where(found, chosen, -1)
                reason[rows] = np.where(found, SIMILAR, reason[rows])
        if self.new_items is not None:
            new = self.new_items[torch.as_tensor(items).clamp(min=0)].numpy()
            reason[new] = NEW_ITEM
        invalid = ~np.isfinite(scores)
        because[invalid] = -1
        return because, reason
