"""Top-K ranking metrics on tensors, one value per user; callers average over users.

Inputs: `hits` [B, K] bool, True where the item ranked k-th (k = 1..K) is relevant, and
`n_relevant` [B], the number of relevant (held-out) items of each user, at least 1.

- Precision@K = hits / K
- Recall@K = hits / n_relevant
- HitRate@K = 1 if any of the K is relevant, else 0
- NDCG@K = DCG / IDCG with DCG = Σ_k hit_k / log2(k + 1) and IDCG the DCG of min(K, n_relevant)
  hits at the top (binary relevance)
- MAP@K (average precision at K) = Σ_k Precision@k · hit_k / min(K, n_relevant)
"""
from __future__ import annotations

import torch
from torch import Tensor


def _discounts(k: int, device=None) -> Tensor:
    return 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float64, device=device))


def precision_at_k(hits: Tensor, n_relevant: Tensor) -> Tensor:
    return hits.sum(1, dtype=torch.float64) / hits.shape[1]


def recall_at_k(hits: Tensor, n_relevant: Tensor) -> Tensor:
    return hits.sum(1, dtype=torch.float64) / n_relevant.to(torch.float64)


def hit_rate_at_k(hits: Tensor, n_relevant: Tensor) -> Tensor:
    return hits.any(1).to(torch.float64)


def ndcg_at_k(hits: Tensor, n_relevant: Tensor) -> Tensor:
    k = hits.shape[1]
    disc = _discounts(k, hits.device)
    dcg = (hits.to(torch.float64) * disc).sum(1)
    ideal = torch.cumsum(disc, 0)[(n_relevant.clamp(max=k) - 1).long()]
    return dcg / ideal


def map_at_k(hits: Tensor, n_relevant: Tensor) -> Tensor:
    k = hits.shape[1]
    h = hits.to(torch.float64)
    precision_at = torch.cumsum(h, 1) / torch.arange(1, k + 1, dtype=torch.float64, device=h.device)
    return (precision_at * h).sum(1) / n_relevant.clamp(max=k).to(torch.float64)


METRICS = {"precision": precision_at_k, "recall": recall_at_k, "hit_rate": hit_rate_at_k,
           "ndcg": ndcg_at_k, "map": map_at_k}

