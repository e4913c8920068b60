"""Lists of values as catalogues ship them: "Action|Comedy" columns, free text, tag tables.

Each becomes, per row of a side table, a fixed-length list of integer ids (Petastorm refuses
lists of unequal length: see DESIGN.md), built entirely in Spark:
- `split_values` / `tokens` turn a column into an array of strings (a delimited column's
  values; a text's lower-cased words);
- `vocabulary` counts in how many rows each string appears, keeps those in at least
  `min_count` rows, the `max_size` most frequent (ties by the string), and numbers them from 2;
- `encode` maps each row's strings to those ids (a string outside the vocabulary to UNKNOWN,
  1), keeps the first `length` and pads with PAD (0).
The vocabulary is a small DataFrame joined to the rows, never collected to the driver.
"""
from __future__ import annotations

import re

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

PAD, UNKNOWN = 0, 1


def split_values(col: Column, sep: str) -> Column:
    """"A|B| C" -> ["A", "B", "C"]: trimmed, empty and repeated values left out, order kept."""
    parts = F.transform(F.split(col.cast("string"), re.escape(sep)), lambda x: F.trim(x))
    return F.array_distinct(F.filter(parts, lambda x: x != ""))


def tokens(col: Column) -> Column:
    """Free text -> its lower-cased words (runs of letters and digits), in order."""
    parts = F.split(F.lower(col.cast("string")), r"[^\p{L}\p{N}]+")
    return F.filter(parts, lambda x: x != "")


def vocabulary(lists: DataFrame, column: str, min_count: int, max_size: int) -> DataFrame:
    """`lists` with an array<string> `column` -> value, code (2..): the values in at least
    `min_count` rows, the `max_size` most frequent."""
    counts = (lists.select(F.explode(F.array_distinct(column)).alias("value"))
              .groupBy("value").count().where(F.col("count") >= min_count))
    top = counts.orderBy(F.col("count").desc(), "value").limit(max_size)  # a top-k, not a sort of all
    order = Window.orderBy(F.col("count").desc(), "value")  # at most max_size rows, one partition
    return top.select("value", (F.row_number().over(order) + 1).cast("int").alias("code"))


def encode(lists: DataFrame, key: str, column: str, vocab: DataFrame, length: int) -> DataFrame:
    """`lists` (key, array<string> `column`) -> key, `column` as `length` int codes, padded."""
    exploded = lists.select(key, F.posexplode(column).alias("pos", "value")).where(F.col("pos") < length)
    coded = exploded.join(F.broadcast(vocab), "value", "left").select(
        key, "pos", F.coalesce("code", F.lit(UNKNOWN)).alias("code"))
    grouped = coded.groupBy(key).agg(F.sort_array(F.collect_list(F.struct("pos", "code"))).alias("_c"))
    codes = F.transform("_c", lambda x: x["code"])
    padded = F.concat(codes, F.array_repeat(F.lit(PAD), F.lit(length) - F.size(codes)))
    out = lists.select(key).join(grouped.select(key, padded.alias(column)), key, "left")
    return out.select(key, F.coalesce(F.col(column), F.array_repeat(F.lit(PAD), length)).alias(column))


def top_tags(tags: DataFrame, item: str, tag: str, key_out: str, length: int) -> DataFrame:
    """(user, item, tag) rows -> key_out, tags: each item's `length` most applied tags (by rows,
    ties by tag; lower-cased and trimmed), in that order."""
    t = F.lower(F.trim(F.col(tag).cast("string")))
    counts = (tags.select(F.trim(F.col(item).cast("string")).alias(key_out), t.alias("t"))
              .where(F.col("t").isNotNull() & (F.col("t") != "") & F.col(key_out).isNotNull())
              .groupBy(key_out, "t").count())
    w = Window.partitionBy(key_out).orderBy(F.col("count").desc(), "t")
    ranked = counts.withColumn("_r", F.row_number().over(w)).where(F.col("_r") <= length)
    return ranked.groupBy(key_out).agg(F.sort_array(F.collect_list(F.struct("_r", "t"))).alias("_l")).select(
        key_out, F.transform("_l", lambda x: x["t"]).alias("tags"))
