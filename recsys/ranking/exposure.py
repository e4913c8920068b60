"""Beyond accuracy: how a set of top-K lists spreads exposure over the catalogue.

Plain NumPy on what the evaluator already holds, batch by batch: `lists` [U, K] item ids per
user (-1: an empty slot), `exposure` [n_items] the slots each item got (`exposure_counts`,
summed over batches), `popularity` [n_items] training interactions per item, `categories`
[n_items, M] each item's category codes (0: none; one column for a single category).

- coverage: the share of catalogue items in at least one list;
- gini: the Gini coefficient of exposure over every catalogue item, never-recommended items
  counting as zero: 0 when every item gets the same number of slots, (n - 1) / n when one item
  gets them all;
- top1pct_exposure: the share of slots that go to the ceil(1%) of catalogue items most
  exposed (ranked by exposure, not by training popularity: how concentrated what is shown is);
- novelty: the mean over slots of the item's self-information -log2(p_i) in bits, p_i its share
  of all training interactions (an item without any counts as one, the most novel, not an
  infinite one). Training rows are distinct (user, item) pairs, so p_i is also the item's
  users over all interactions; the per-user definition (users / n_users) is this minus the
  constant log2(interactions per user);
- diversity: intra-list diversity, the mean over lists of the mean cosine distance between the
  category sets of a list's pairs of items, 1 - |A ∩ B| / sqrt(|A| |B|); with one category per
  item, the share of pairs in different categories. Items without a category are left out, and
  lists with fewer than two categorised items;
- exposure_by_decile: the catalogue sorted by training popularity (ties by item id) cut into
  10 groups of (nearly) equal size, least popular first (the item ranked r of n falls in group
  floor(10 r / n)), and the share of slots each group got.

`summary` returns them as `name@K` keys; a value that is undefined (no slots at all, no list
with two categorised items) is None.
"""
from __future__ import annotations

import math

import numpy as np

DECILES = 10
TOP_SHARE = 0.01


def exposure_counts(lists: np.ndarray, n_items: int) -> np.ndarray:
    """[n_items] int64: how many slots of `lists` each item fills (-1 slots are empty)."""
    flat = np.asarray(lists).ravel()
    return np.bincount(flat[flat >= 0], minlength=n_items).astype(np.int64)


def coverage(exposure: np.ndarray) -> float:
    return float(np.mean(exposure > 0)) if len(exposure) else math.nan


def gini(exposure: np.ndarray) -> float:
    """G = Σ_i (2i - n - 1) e_(i) / (n Σ e), exposures sorted ascending, i = 1..n."""
    e = np.sort(np.asarray(exposure, dtype=np.float64))
    n, total = len(e), e.sum()
    if n == 0 or total == 0:
        return math.nan
    return float(np.dot(2 * np.arange(1, n + 1) - n - 1, e) / (n * total))


def top_share(exposure: np.ndarray, share: float = TOP_SHARE) -> float:
    """The share of slots that go to the ceil(share * n) most exposed items."""
    e = np.asarray(exposure, dtype=np.float64)
    total = e.sum()
    if total == 0:
        return math.nan
    top = max(1, math.ceil(share * len(e)))
    return float(np.sort(e)[len(e) - top:].sum() / total)


def self_information(popularity: np.ndarray) -> np.ndarray:
    """[n_items] -log2(p_i) in bits, p_i = max(count, 1) / all training interactions."""
    pop = np.maximum(np.asarray(popularity, dtype=np.float64), 1.0)
    return np.log2(max(float(np.asarray(popularity).sum()), 1.0)) - np.log2(pop)


def novelty(exposure: np.ndarray, popularity: np.ndarray) -> float:
    e = np.asarray(exposure, dtype=np.float64)
    total = e.sum()
    return float(np.dot(e, self_information(popularity)) / total) if total else math.nan


def by_popularity_decile(exposure: np.ndarray, popularity: np.ndarray,
                         groups: int = DECILES) -> np.ndarray:
    """[groups] share of slots per popularity group, least popular first (sums to 1)."""
    e = np.asarray(exposure, dtype=np.float64)
    total = e.sum()
    if total == 0:
        return np.full(groups, math.nan)
    order = np.lexsort((np.arange(len(e)), np.asarray(popularity)))  # ascending, ties by id
    group = np.empty(len(e), np.int64)
    group[order] = np.arange(len(e)) * groups // len(e)  # rank r of n: group floor(r * groups / n)
    return np.bincount(group, weights=e, minlength=groups) / total


def category_sets(codes: np.ndarray) -> np.ndarray:
    """[n_items] or [n_items, M] codes (0: none) -> [n_items, M'] with each row's distinct
    codes first, zeros after, and the columns that are zero everywhere dropped (M' >= 1)."""
    c = np.asarray(codes, dtype=np.int64)
    c = c.reshape(len(c), -1)
    c = -np.sort(-c, axis=1)  # descending: codes first, zeros last
    repeat = np.zeros(c.shape, bool)
    repeat[:, 1:] = c[:, 1:] == c[:, :-1]
    c = -np.sort(-np.where(repeat, 0, c), axis=1)
    width = max(1, int((c > 0).sum(1).max(initial=0)))
    return np.ascontiguousarray(c[:, :width])


def intra_list_diversity(lists: np.ndarray, categories: np.ndarray,
                         max_entries: int = 1 << 22) -> np.ndarray:
    """[U] each list's mean cosine distance 1 - |A ∩ B| / sqrt(|A| |B|) between the category
    sets of its pairs of categorised items (NaN: fewer than two); `categories` as from
    `category_sets`.

    Without visiting the pairs: with x_i item i's category vector scaled to norm 1 and u their
    sum over the list's m items, the pairs' similarities add up to (|u|² - m) / 2, so the list
    costs its K x M codes, and memory stays within `max_entries` codes at a time.
    """
    lists = np.asarray(lists)
    n_lists, k = lists.shape
    cats = np.asarray(categories, dtype=np.int64)
    size = (cats > 0).sum(1)
    scale = 1.0 / np.sqrt(np.maximum(size, 1))
    base = int(cats.max(initial=0)) + 1
    out = np.full(n_lists, np.nan)
    step = max(1, max_entries // max(1, k * cats.shape[1]))
    for lo in range(0, n_lists, step):
        rows = lists[lo:lo + step]
        item = np.maximum(rows, 0)
        counted = (rows >= 0) & (size[item] > 0)  # [b, K]
        m = counted.sum(1)
        codes = cats[item]  # [b, K, M]
        entry = counted[..., None] & (codes > 0)
        row = np.broadcast_to(np.arange(len(rows))[:, None, None], codes.shape)[entry]
        weight = np.broadcast_to(scale[item][..., None], codes.shape)[entry]
        key, where = np.unique(row * base + codes[entry], return_inverse=True)  # (list, code)
        u = np.bincount(where, weights=weight)  # the list's sum of scaled vectors, per code
        norm2 = np.bincount(key // base, weights=u * u, minlength=len(rows))
        pairs = m * (m - 1)  # twice the pairs
        out[lo:lo + step] = np.where(pairs > 0, 1.0 - (norm2 - m) / np.maximum(pairs, 1), np.nan)
    return out


def from_histogram(values: np.ndarray, items: np.ndarray, n_items: int, k: int) -> dict:
    """coverage, gini and top1pct_exposure (as in `summary`) of a whole table from its
    histogram: `items[j]` catalogue items got `values[j]` > 0 slots each; the other items of
    the `n_items` got none. The cost follows the number of distinct slot counts, not the
    catalogue (the score job measures every user's list this way)."""
    v = np.asarray(values, dtype=np.float64)
    c = np.asarray(items, dtype=np.float64)
    order = np.argsort(v)
    v, c = v[order], c[order]
    total = float(np.dot(v, c))
    zeros = n_items - c.sum()
    if n_items <= 0 or total == 0:
        return {f"coverage@{k}": None, f"gini@{k}": None, f"top1pct_exposure@{k}": None}
    before = zeros + np.concatenate([[0.0], np.cumsum(c)[:-1]])  # items ranked below each group
    # Σ over a group's ranks a+1..a+c of (2i - n - 1) is c (2a + c - n)
    g = float(np.dot(v * c, 2 * before + c - n_items)) / (n_items * total)
    top = max(1, math.ceil(TOP_SHARE * n_items))
    taken = np.minimum(c[::-1], np.maximum(top - np.concatenate([[0.0], np.cumsum(c[::-1])[:-1]]), 0))
    return {f"coverage@{k}": _value(c.sum() / n_items), f"gini@{k}": _value(g),
            f"top1pct_exposure@{k}": _value(float(np.dot(taken, v[::-1])) / total)}


def _value(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def summary(exposure: np.ndarray, popularity: np.ndarray, k: int,
            diversity: float | None = None) -> dict:
    """The beyond-accuracy numbers of one set of top-K lists, keyed `name@K` (JSON-ready)."""
    deciles = by_popularity_decile(exposure, popularity)
    out = {f"coverage@{k}": _value(coverage(exposure)),
           f"gini@{k}": _value(gini(exposure)),
           f"top1pct_exposure@{k}": _value(top_share(exposure)),
           f"novelty@{k}": _value(novelty(exposure, popularity)),
           f"exposure_by_decile@{k}": [_value(x) for x in deciles],
           f"slots@{k}": int(np.sum(exposure))}
    if diversity is not None:
        out[f"diversity@{k}"] = _value(diversity)
    return out
