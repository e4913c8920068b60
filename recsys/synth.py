"""Synthetic interaction logs for scale and robustness tests.

The log imitates a real clickstream closely enough to exercise the pipeline the way
production data would: heavy-tailed user activity and item popularity, a daily
traffic cycle, a known mix of malformed rows (one problem per row, so the validator's
reason counts can be checked exactly) and injected exact duplicates. Everything is
vectorised (NumPy for sampling, Arrow compute for text) and written chunk by chunk,
so memory depends on ``chunk_rows`` and not on the size of the log.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

COLUMNS = ("user_id", "item_id", "event_type", "ts", "value")
EVENT_TYPES = ("view", "click", "cart", "purchase", "rate")
EVENT_P = (0.70, 0.15, 0.06, 0.02, 0.07)
RATING_P = (0.05, 0.10, 0.20, 0.35, 0.30)  # ratings lean positive, as on real sites
CORRUPT_KINDS = ("missing_user", "missing_item", "bad_timestamp", "future_timestamp",
                 "bad_value", "value_out_of_range", "unknown_event", "malformed_line")
UNKNOWN_EVENTS = ("teleport", "hover", "wishlist")
BAD_TS = ("not-a-time", "tomorrow", "ts?")
BAD_VALUES = ("abc", "five", "n/a")
OUT_OF_RANGE = (0, 6, 42, 99)
GARBAGE = "%%%garbage%%%"
# Zipf-Mandelbrot 1/(rank+q)^a: the offset q keeps a single "bot" id from owning
# several percent of a large log while leaving the tail power-law.
USER_ZIPF, ITEM_ZIPF = (1.0, 10.0), (1.1, 5.0)
_RATE = EVENT_TYPES.index("rate")
_Y2099 = int(datetime(2099, 1, 1, tzinfo=timezone.utc).timestamp())
_EVENT_CDF = np.cumsum(EVENT_P) / np.sum(EVENT_P)
_HOUR_P = 1 + 0.6 * np.cos(2 * np.pi * (np.arange(24) - 20) / 24)  # evening peak, night trough
_HOUR_CDF = np.cumsum(_HOUR_P) / _HOUR_P.sum()
_LS = pa.large_string()  # 64-bit offsets: a big chunk must not overflow 2 GiB of text


@dataclass(frozen=True)
class SynthSpec:
    """What to generate; equal specs give byte-identical output."""
    events: int                 # number of clean events before corruption/duplication
    users: int | None = None    # default max(100, events // 40)
    items: int | None = None    # default max(50, events // 400)
    days: int = 90              # timestamps spread over this many days ...
    end: str = "2026-11-01"     # ... ending at this date (YYYY-MM-DD, UTC, exclusive)
    corrupt_share: float = 0.01  # share of all rows that are malformed (split across kinds)
    duplicate_share: float = 0.005  # share of all rows that are exact copies of clean rows
    seed: int = 0
    chunk_rows: int = 1_000_000  # clean events per output file

    def resolved(self) -> "SynthSpec":
        """The spec with defaults filled in, as recorded in ``_synth.json``."""
        return dataclasses.replace(
            self, users=self.users or max(100, self.events // 40),
            items=self.items or max(50, self.events // 400))


def end_epoch(spec: SynthSpec) -> int:
    """Exclusive upper bound of clean timestamps, unix seconds."""
    return int(datetime.strptime(spec.end, "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp())


def _split(total: int, parts: int) -> np.ndarray:
    """Split ``total`` into ``parts`` near-equal non-negative integers."""
    return np.full(parts, total // parts) + (np.arange(parts) < total % parts)


def _zipf_cdf(n: int, a: float, q: float) -> np.ndarray:
    cdf = np.cumsum(1.0 / (np.arange(1, n + 1) + q) ** a)
    return cdf / cdf[-1]


def _draw(rng, cdf: np.ndarray, n: int) -> np.ndarray:
    # searchsorted on a precomputed CDF is far cheaper than rng.choice(p=...) per chunk
    return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(cdf) - 1)


def _s(text: str) -> pa.Scalar:
    return pa.scalar(text, _LS)


def _join(*parts, sep: str = "") -> pa.Array:
    parts = [_s(p) if isinstance(p, str) else p for p in parts]
    return pc.binary_join_element_wise(*parts, _s(sep))


def _text(ints: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(ints), _LS)


def _replace(arr: pa.Array, bad: np.ndarray, table: tuple[str, ...], quote: bool) -> pa.Array:
    """Overwrite rows where ``bad >= 0`` with ``table[bad]`` (JSON-quoted if asked)."""
    mask = bad >= 0
    if not mask.any():
        return arr
    words = pa.array([f'"{w}"' if quote else w for w in table], _LS)
    return pc.replace_with_mask(arr, pa.array(mask), pc.take(words, pa.array(bad[mask])))


def _render(c: dict, fmt: str) -> pa.Array:
    """Turn the chunk's column arrays into one text line per row (no newline)."""
    js = fmt == "jsonl"
    q = '"' if js else ""
    nul = "null" if js else ""
    user = pc.if_else(pa.array(c["uid"] < 0), _s(nul), _join(q + "u", _text(c["uid"]), q))
    item = pc.if_else(pa.array(c["iid"] < 0), _s(nul), _join(q + "i", _text(c["iid"]), q))
    event = pc.take(pa.array(EVENT_TYPES + UNKNOWN_EVENTS, _LS), pa.array(c["ev"]))
    ts = _replace(_text(c["ts"]), c["ts_bad"], BAD_TS, js)
    value = pc.if_else(pa.array(c["val"] < 0), _s(nul), _text(c["val"]))
    value = _replace(value, c["val_bad"], BAD_VALUES, js)
    if js:
        line = _join('{"user_id":', user, ',"item_id":', item, ',"event_type":"', event,
                     '","ts":', ts, ',"value":', value, "}")
    else:
        line = _join(user, item, event, ts, value, sep=",")
    mask = c["garbage"] >= 0
    if mask.any():
        rows = pa.array(np.flatnonzero(mask))
        variant, full = c["garbage"][mask], pc.take(line, rows)
        # three ways real logs break: noise, a cut-off write, a stray field or brace lost
        cut = _join(*(pc.take(col, rows) for col in (user, item, event)), sep=",")
        other = pc.utf8_slice_codeunits(full, 0, -1) if js else _join(full, "extra", sep=",")
        bad = pc.if_else(pa.array(variant == 0), _s(GARBAGE),
                         pc.if_else(pa.array(variant == 1), cut, other))
        line = pc.replace_with_mask(line, pa.array(mask), bad)
    return line


def _chunk(spec: SynthSpec, rng, pop: tuple, n_clean: int, kinds: np.ndarray, n_dup: int) -> dict:
    """Sample one chunk: clean rows, corrupted rows and duplicates, shuffled together."""
    n = n_clean + int(kinds.sum())
    ucdf, icdf, uperm, iperm = pop
    ev = _draw(rng, _EVENT_CDF, n).astype(np.int8)
    hour = _draw(rng, _HOUR_CDF, n)
    start = end_epoch(spec) - spec.days * 86400
    c = {
        "uid": uperm[_draw(rng, ucdf, n)], "iid": iperm[_draw(rng, icdf, n)], "ev": ev,
        "ts": start + rng.integers(0, spec.days, n) * 86400 + hour * 3600
        + rng.integers(0, 3600, n),
        "val": np.where(ev == _RATE, rng.choice(np.arange(1, 6), n, p=RATING_P), -1),
    }
    for key in ("ts_bad", "val_bad", "garbage"):
        c[key] = np.full(n, -1, dtype=np.int8)
    lo = n_clean
    for kind, k in zip(CORRUPT_KINDS, kinds.tolist()):
        s = slice(lo, lo + k)
        lo += k
        if kind == "missing_user":
            c["uid"][s] = -1
        elif kind == "missing_item":
            c["iid"][s] = -1
        elif kind == "bad_timestamp":
            c["ts_bad"][s] = rng.integers(0, len(BAD_TS), k)
        elif kind == "future_timestamp":
            c["ts"][s] = _Y2099 + rng.integers(0, 365 * 86400, k)
        elif kind in ("bad_value", "value_out_of_range"):
            c["ev"][s] = _RATE  # a rating problem only makes sense on a rate event
            if kind == "bad_value":
                c["val_bad"][s] = rng.integers(0, len(BAD_VALUES), k)
            else:
                c["val"][s] = rng.choice(OUT_OF_RANGE, k)
        elif kind == "unknown_event":
            c["ev"][s] = len(EVENT_TYPES) + rng.integers(0, len(UNKNOWN_EVENTS), k)
            c["val"][s] = -1  # a value would add a second problem
        else:
            c["garbage"][s] = rng.integers(0, 3, k)
    # duplicates copy clean rows, then one shuffle scatters them and the bad rows
    order = np.concatenate([np.arange(n), rng.integers(0, n_clean, n_dup)])
    order = order[rng.permutation(len(order))]
    return {key: arr[order] for key, arr in c.items()}


def generate(spec: SynthSpec, out: str, fmt: str = "csv") -> dict:
    """Write the log to directory ``out`` and return the counts also stored in ``out/_synth.json``.

    One ``part-NNNNN.csv`` (with header) or ``part-NNNNN.jsonl`` per chunk of
    ``spec.chunk_rows`` clean events. Corrupt and duplicate counts are shares of all
    rows, spread evenly over the corruption kinds and over the chunks.
    """
    if fmt not in ("csv", "jsonl"):
        raise ValueError(f"fmt must be 'csv' or 'jsonl', not {fmt!r}")
    cs, ds = spec.corrupt_share, spec.duplicate_share
    if spec.events < 0 or spec.days < 1 or spec.chunk_rows < 1 or min(cs, ds) < 0 or cs + ds >= 1:
        raise ValueError(f"invalid spec: {spec}")
    spec = spec.resolved()
    total = spec.events / (1 - cs - ds)
    n_corrupt = round(total * cs)
    n_dup = round(total * ds) if spec.events else 0
    n_chunks = max(1, -(-spec.events // spec.chunk_rows))
    kinds = np.stack([_split(k, n_chunks) for k in _split(n_corrupt, len(CORRUPT_KINDS))], axis=1)
    seeds = np.random.SeedSequence(spec.seed).spawn(n_chunks + 1)
    base = np.random.default_rng(seeds[0])
    # shuffled ids so that popularity rank is unrelated to the id number
    pop = (_zipf_cdf(spec.users, *USER_ZIPF), _zipf_cdf(spec.items, *ITEM_ZIPF),
           base.permutation(spec.users), base.permutation(spec.items))

    os.makedirs(out, exist_ok=True)
    for pattern in ("part-*.csv", "part-*.jsonl", "_synth.json"):
        for stale in glob.glob(os.path.join(out, pattern)):
            os.remove(stale)  # a previous, larger run would otherwise leave extra parts behind
    files, rows = [], 0
    for i, (n_clean, n_d) in enumerate(zip(_split(spec.events, n_chunks), _split(n_dup, n_chunks))):
        c = _chunk(spec, np.random.default_rng(seeds[i + 1]), pop, int(n_clean), kinds[i], int(n_d))
        text = _join(_render(c, fmt), "\n")  # Arrow's data buffer is then the file body
        offsets = np.frombuffer(text.buffers()[1], dtype=np.int64)[text.offset:][[0, len(text)]]
        name = f"part-{i:05d}.{fmt}"
        with open(os.path.join(out, name), "wb") as f:
            if fmt == "csv":
                f.write((",".join(COLUMNS) + "\n").encode())
            f.write(memoryview(text.buffers()[2])[offsets[0]:offsets[-1]])
        files.append(name)
        rows += len(text)
    meta = {"spec": dataclasses.asdict(spec), "format": fmt, "rows": rows, "clean": spec.events,
            "duplicates": n_dup,
            "corrupt": dict(zip(CORRUPT_KINDS, kinds.sum(axis=0).tolist())), "files": files}
    with open(os.path.join(out, "_synth.json"), "w") as f:
        json.dump(meta, f, indent=2)
    return meta
