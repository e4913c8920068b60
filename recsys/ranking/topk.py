"""Top-N selection on score matrices: seen items excluded, item rules, a per-category cap.

Pure tensor functions (no Spark), called per batch of users by the scorer, by the evaluator
(validation in training and in the evaluate step) and by tests: one implementation, so what is
measured is ranked exactly as what is published.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

NEG_INF = float("-inf")
# With a per-category cap, this many times N candidates are ranked before the cap is applied,
# so skipping over-represented categories still leaves N items.
CAP_HEADROOM = 4
# Columns per group in `top_k`'s first level: the fastest of 4, 8, 16 and 32 at 20k and 100k
# items, in a one-core micro-benchmark of the worker's batches.
CHUNK = 8


def ragged_mask(offsets: np.ndarray, items: np.ndarray, n_items: int) -> Tensor:
    """Rows given as a flat `items` array cut at `offsets` (len B+1) -> [B, n_items] bool."""
    rows = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    mask = torch.zeros(len(offsets) - 1, n_items, dtype=torch.bool)
    if len(items):
        mask[torch.as_tensor(rows), torch.as_tensor(items, dtype=torch.long)] = True
    return mask


def take_ragged(offsets: np.ndarray, flat: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows `rows` of a ragged array (flat values cut at offsets) as a new ragged array."""
    return _runs(flat, offsets[rows], offsets[rows + 1] - offsets[rows])


def group_ragged(keys: np.ndarray, pair_keys: np.ndarray, pair_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The values paired with each of `keys` (e.g. each user's items, from unsorted
    (user, item) pairs) as a ragged array in the order of `keys`; absent keys get none."""
    order = np.argsort(pair_keys, kind="stable")
    sorted_keys = pair_keys[order]
    starts = np.searchsorted(sorted_keys, keys, "left")
    return _runs(pair_values[order], starts, np.searchsorted(sorted_keys, keys, "right") - starts)


def ragged_tail(offsets: np.ndarray, flat: np.ndarray, n: int) -> np.ndarray:
    """The last `n` values of each row of a ragged array, right-aligned in [B, n] and padded on
    the left with -1: a user's newest items, as the history models read them."""
    lengths = np.diff(offsets)
    take = np.minimum(lengths, n)
    rows = np.repeat(np.arange(len(lengths)), take)
    pos = np.arange(take.sum()) - np.repeat(np.cumsum(take) - take, take)  # 0.. within each row
    out = np.full((len(lengths), n), -1, np.int64)
    out[rows, n - take[rows] + pos] = flat[offsets[1:][rows] - take[rows] + pos]
    return out


def _runs(flat: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The runs flat[starts[i]:starts[i] + lengths[i]], concatenated, with their offsets."""
    new_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    positions = np.arange(new_offsets[-1]) + np.repeat(starts - new_offsets[:-1], lengths)
    return new_offsets, flat[positions]


def exclude_(scores: Tensor, offsets: np.ndarray, items: np.ndarray,
             blocked: Tensor | None = None) -> Tensor:
    """Set -inf, in place, where a row's ragged `items` (or a `blocked` column) would be:
    the same effect as `ragged_mask` + `masked_fill` without a [B, n_items] mask."""
    rows = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    if len(items):
        device = scores.device
        scores[torch.as_tensor(rows, device=device),
               torch.as_tensor(items, dtype=torch.long, device=device)] = NEG_INF
    if blocked is not None:
        scores[:, blocked] = NEG_INF
    return scores


def top_n(scores: Tensor, exclude: Tensor | None, n: int) -> tuple[Tensor, Tensor]:
    """The n best items per row, never an excluded one: (items [B, n], scores [B, n]).

    Where a row has fewer than n eligible items the tail scores are -inf; callers drop them.
    """
    if exclude is not None:
        scores = scores.masked_fill(exclude, NEG_INF)
    values, items = top_k(scores, min(n, scores.shape[1]))
    return items, values


def top_n_reserving(scores: Tensor, reserved: Tensor, n: int, k: int) -> tuple[Tensor, Tensor]:
    """`top_n` with at least k of the n from the `reserved` columns (e.g. new items) where they
    score finite: their best k, then the best n - k of all the rest, in score order. `scores`
    is overwritten where the reserved winners were."""
    part = scores[:, reserved]  # [B, len(reserved)], a copy
    values_r, pos = top_k(part, min(k, part.shape[1]))
    items_r = reserved[pos]
    scores.scatter_(1, items_r, NEG_INF)
    items_o, values_o = top_n(scores, None, n - items_r.shape[1])
    values, order = torch.sort(torch.cat([values_r, values_o], 1), dim=1, descending=True)
    return torch.cat([items_r, items_o], 1).gather(1, order), values


def top_k(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """`torch.topk(scores, k, dim=1)` (values, indices), in two levels when rows are long.

    Why: on the CPU, torch.topk of k from n >= 64 * k copies every row into (value, index)
    pairs and heap-selects them, about 5 ns per score: more than the matrix product that made
    the scores (README, performance). Here the columns are cut into c = n // CHUNK groups
    (column j in group j mod c), each group's maximum is taken in one vectorised reduction,
    and only the k groups with the largest maxima (plus the n - c * CHUNK columns left over) are
    searched. Exact: a score s outside those groups is at most its group's maximum, which
    is at most each chosen group's maximum, so k searched scores are >= s. The values equal
    torch.topk's; items with equal scores may come in another order.
    """
    b, n = scores.shape
    groups = n // CHUNK
    if groups < 4 * k:  # short rows: torch.topk's own selection is the faster one
        return torch.topk(scores, k, dim=1)
    covered = groups * CHUNK
    maxima = scores[:, :covered].unflatten(1, (CHUNK, groups)).amax(1)  # a view, no copy
    best = torch.topk(maxima, k, dim=1, sorted=False).indices  # [B, k] group ids
    dev = scores.device
    columns = (best.unsqueeze(2) + torch.arange(0, covered, groups, device=dev)).flatten(1)  # members
    if covered < n:
        columns = torch.cat([columns, torch.arange(covered, n, device=dev).expand(b, n - covered)], dim=1)
    values, at = torch.topk(scores.gather(1, columns), k, dim=1)
    return values, columns.gather(1, at)


def cap_per_category(items: Tensor, scores: Tensor, category: Tensor, cap: int,
                     n: int) -> tuple[Tensor, Tensor]:
    """Keep, in score order, at most `cap` items of each category, then the first n.

    `items`/`scores` [B, C] are candidates sorted by score (C > n leaves room to skip);
    `category` [n_items] maps an item to its category code.
    """
    b, c = items.shape
    cat = category[items]
    pos = torch.arange(c).expand(b, c)
    # Sort by (category, position): equal categories become runs in score order.
    order = torch.argsort(cat * c + pos, dim=1, stable=True)
    sorted_cat = cat.gather(1, order)
    starts = torch.ones_like(sorted_cat, dtype=torch.bool)
    starts[:, 1:] = sorted_cat[:, 1:] != sorted_cat[:, :-1]
    run_start = torch.cummax(torch.where(starts, pos, torch.zeros_like(pos)), dim=1).values
    rank_in_cat = torch.empty_like(pos).scatter_(1, order, pos - run_start)
    keep = (rank_in_cat < cap) & torch.isfinite(scores)
    # Stable sort of the kept candidates to the front, still in score order.
    front = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :n]
    kept_scores = scores.gather(1, front).masked_fill(~keep.gather(1, front), NEG_INF)
    return items.gather(1, front), kept_scores
