"""Per-user and per-item feature tables, keyed by the dense id.

Activity features come from the training split only (validation must not leak into them).
Side-table attributes are encoded for embedding lookups: categorical values and numeric buckets
become integer codes (0 = missing), flag columns become one multi-hot vector, delimited
columns, free text and tags become fixed-length lists of vocabulary ids (`vocab.py`). What was
encoded how is described in a small metadata dict written beside the table (`_features.json`).
"""
from __future__ import annotations

from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys import schema as S
from recsys.config import SideTableConfig
from recsys.prep import vocab
from recsys.sources import require_columns

DAY_SECONDS = 86400.0


def _codes(df: DataFrame, column: str) -> tuple[Any, list[str]]:
    """Column of integer codes 1..K for the sorted distinct values (0 for null or empty)."""
    values = sorted(r[0] for r in df.select(F.trim(F.col(column).cast("string")).alias("v"))
                    .where("v IS NOT NULL AND v != ''").distinct().collect())
    mapping = F.create_map(*[F.lit(x) for i, v in enumerate(values, 1) for x in (v, i)]) \
        if values else None
    text = F.trim(F.col(column).cast("string"))
    code = F.coalesce(mapping[text], F.lit(0)) if mapping is not None else F.lit(0)
    return code.cast("int"), values


def bucket_code(col: Any, edges: list[float]) -> Any:
    """0 for null, else 1 + the number of edges at or below the value."""
    num = col.cast("double")
    count = sum((F.when(num >= e, 1).otherwise(0) for e in edges), F.lit(0))
    return F.when(num.isNull(), 0).otherwise(count + 1).cast("int")


def encode_side_table(df: DataFrame, side: SideTableConfig, key_out: str,
                      ref_ts: int, tags: DataFrame | None = None) -> tuple[DataFrame, dict[str, Any]]:
    """Encode the configured attributes of a side table (and `tags`, a tag table, for items);
    one row per id (first row wins)."""
    wanted = {"key": side.key, **{f"categorical[{c}]": c for c in side.categorical},
              **{f"numeric[{c}]": c for c in side.numeric},
              **{f"buckets[{c}]": c for c in side.buckets},
              **{f"multi_hot[{n}]": c for n, cs in side.multi_hot.items() for c in cs},
              **{f"multi_valued[{c}]": c for c in side.multi_valued},
              **{f"text[{c}]": c for c in side.text}}
    if side.date:
        wanted["date"] = side.date
    require_columns(df, wanted, f"side table {side.path or side.table}")

    key = F.trim(F.col(side.key).cast("string"))
    df = df.where(key.isNotNull() & (key != "")).dropDuplicates([side.key])
    meta: dict[str, Any] = {"categorical": {}, "numeric": [], "multi_hot": {}, "lists": {}}
    out = [key.alias(key_out)]
    for c in side.categorical:
        code, values = _codes(df, c)
        out.append(code.alias(c))
        meta["categorical"][c] = {"cardinality": len(values) + 1, "vocab": values}
    for c, edges in side.buckets.items():
        out.append(bucket_code(F.col(c), sorted(edges)).alias(f"{c}_bucket"))
        meta["categorical"][f"{c}_bucket"] = {"cardinality": len(edges) + 2, "edges": sorted(edges)}
    for c in side.numeric:
        out.append(F.col(c).cast("float").alias(c))
        meta["numeric"].append(c)
    for name, cols in side.multi_hot.items():
        flags = [F.coalesce(F.col(c).cast("float"), F.lit(0.0)).cast("float") for c in cols]
        out.append(F.array(*flags).alias(name))
        meta["multi_hot"][name] = {"width": len(cols), "columns": list(cols)}
    if side.date:
        date = F.to_date(F.trim(F.col(side.date)), side.date_format)
        age = (F.lit(ref_ts).cast("long") - F.unix_timestamp(date)) / DAY_SECONDS
        out.append(age.cast("float").alias(f"{side.date}_age_days"))
        meta["numeric"].append(f"{side.date}_age_days")
    encoded = df.select(*out)
    lists = [(c, "values", vocab.split_values(F.col(c), sep), side.max_values) for c, sep in side.multi_valued.items()]
    lists += [(c, "text", vocab.tokens(F.col(c)), side.max_tokens) for c in side.text]
    for name, kind, values, length in lists:
        encoded = _with_list(encoded, df.select(key.alias(key_out), values.alias(name)), key_out, name,
                             kind, length, side, meta)
    if tags is not None:
        per_item = vocab.top_tags(tags, side.tags.item, side.tags.tag, key_out, side.max_values)
        encoded = _with_list(encoded, per_item, key_out, "tags", "values", side.max_values, side, meta)
    return encoded, meta


def _with_list(encoded: DataFrame, lists: DataFrame, key: str, name: str, kind: str, length: int,
               side: SideTableConfig, meta: dict[str, Any]) -> DataFrame:
    """`encoded` with the list feature `name`: `lists`' strings as `length` vocabulary ids."""
    if name in encoded.columns:
        raise ValueError(f"side table feature {name!r} is configured twice")
    words = vocab.vocabulary(lists, name, side.min_count, side.max_vocab).localCheckpoint()
    meta["lists"][name] = {"kind": kind, "length": length, "cardinality": words.count() + 2}
    ids = vocab.encode(lists.dropDuplicates([key]), key, name, words, length)
    pad = F.array_repeat(F.lit(vocab.PAD), length)
    return (encoded.join(ids, key, "left")
            .withColumn(name, F.coalesce(F.col(name), pad)))


def _activity(train: DataFrame, idx: str, ref_ts: int, count_name: str) -> DataFrame:
    # A log without a value column still gets the column (all null), so the schema is stable.
    value = F.col(S.VALUE) if S.VALUE in train.columns else F.lit(None).cast("float")
    return train.groupBy(idx).agg(
        F.count(F.lit(1)).cast("int").alias(count_name),
        ((F.lit(ref_ts).cast("long") - F.max(F.col(S.TS)).cast("long")) / DAY_SECONDS)
        .cast("float").alias("recency_days"),
        ((F.lit(ref_ts).cast("long") - F.min(F.col(S.TS)).cast("long")) / DAY_SECONDS)
        .cast("float").alias("age_days"),
        F.avg(value).cast("float").alias("mean_value"),
    )


def entity_features(train: DataFrame, index: DataFrame, side: DataFrame | None,
                    side_meta: dict[str, Any] | None, *, key: str, idx: str,
                    count_name: str, ref_ts: int) -> tuple[DataFrame, dict[str, Any]]:
    """Features for every indexed user (or item), with or without training history.

    `count_name` is `n_train` for users and `popularity` for items; entities with no history
    get 0 and null activity features, so the side attributes alone describe them.
    """
    activity = _activity(train, idx, ref_ts, count_name)
    out = index.join(activity, idx, "left").fillna(0, subset=[count_name])
    meta: dict[str, Any] = {"key": idx, "categorical": {}, "multi_hot": {}, "lists": {},
                            "numeric": [count_name, "recency_days", "age_days", "mean_value"]}
    if side is not None:
        out = out.join(side, key, "left")
        meta["categorical"].update(side_meta["categorical"])
        meta["multi_hot"].update(side_meta["multi_hot"])
        meta["lists"] = dict(side_meta["lists"])
        meta["numeric"] += side_meta["numeric"]
        fill = {c: 0 for c in side_meta["categorical"]}
        out = out.fillna(fill)
        for name, spec in side_meta["multi_hot"].items():
            zeros = F.array(*[F.lit(0.0).cast("float")] * spec["width"])
            out = out.withColumn(name, F.coalesce(F.col(name), zeros))
        for name, spec in side_meta["lists"].items():  # no side row: every position padding
            out = out.withColumn(name, F.coalesce(F.col(name), F.array_repeat(F.lit(vocab.PAD), spec["length"])))
    return out.drop(key), meta
