"""Reading the interaction log and side tables, whatever their format, into one raw shape.

The log is read with every mapped column as a string, so that a value that does not parse is
seen by the validator (and quarantined with a reason) instead of being nulled by the reader.
"""
from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recsys import schema as S
from recsys.config import InputConfig, SourceConfig, resolve_data_path
from recsys.errors import MissingColumnError, MissingInputError


def _header_columns(spark: SparkSession, src: SourceConfig, path: str) -> list[str]:
    if src.names:
        return list(src.names)
    if not src.header:
        raise MissingColumnError(
            f"{path}: a CSV without a header needs its column names in `names`")
    return spark.read.option("header", True).option("sep", src.sep).csv(path).columns


def read_source(spark: SparkSession, src: SourceConfig, *, all_strings: bool,
                what: str) -> DataFrame:
    """Read a configured table. CSV and JSON lines keep malformed lines in `_corrupt_record`."""
    if src.format == "table":
        return spark.table(src.table)
    path = resolve_data_path(src.path or "")
    try:
        if src.format == "parquet":
            return spark.read.parquet(path)
        if src.format == "csv":
            names = _header_columns(spark, src, path)
            fields = [T.StructField(n, T.StringType()) for n in names]
            reader = (spark.read.option("sep", src.sep).option("header", src.header)
                      .option("encoding", src.encoding).option("mode", "PERMISSIVE"))
            if all_strings:
                fields.append(T.StructField(S.CORRUPT, T.StringType()))
                reader = reader.option("columnNameOfCorruptRecord", S.CORRUPT)
            return reader.schema(T.StructType(fields)).csv(path)
        if src.format == "json":
            reader = (spark.read.option("mode", "PERMISSIVE")
                      .option("columnNameOfCorruptRecord", S.CORRUPT)
                      .option("encoding", src.encoding))
            if all_strings:
                reader = reader.option("primitivesAsString", True)
            return reader.json(path)
    except Exception as exc:  # Spark's AnalysisException for a missing path is long-winded
        if "PATH_NOT_FOUND" in str(exc) or "Path does not exist" in str(exc):
            raise MissingInputError(f"{what} not found: {path}") from None
        raise
    raise ValueError(f"unsupported format {src.format!r} for {what}")


def read_list(spark: SparkSession, src: SourceConfig, column: str, what: str) -> DataFrame:
    """A configured list of ids (a file or a table): its `column` as strings, under that name;
    a missing column is refused by name (score's item rules, the privacy lists)."""
    df = read_source(spark, src, all_strings=False, what=what)
    if column not in df.columns:
        raise MissingColumnError(f"{what}: column {column!r} is missing; it has {', '.join(df.columns)}")
    return df.select(F.col(column).cast("string").alias(column))


def require_columns(df: DataFrame, columns: dict[str, str | None], what: str) -> None:
    """Fail early, naming the configured key and the missing column."""
    have = set(df.columns)
    for key, name in columns.items():
        if name is not None and name not in have:
            raise MissingColumnError(
                f"{what}: column {name!r} (configured as {key}) is missing; "
                f"the data has: {', '.join(c for c in df.columns if c != S.CORRUPT)}")


def read_log(spark: SparkSession, cfg: InputConfig) -> tuple[DataFrame, str]:
    """The log as strings: user_id, item_id, ts, event, value, raw, _corrupt_record.

    Returns the frame and the timestamp format to parse `ts` with (a native timestamp column
    is rendered as ISO text, whatever `ts_format` says).
    """
    df = read_source(spark, cfg, all_strings=True, what="interaction log")
    cols = cfg.columns
    require_columns(df, {"input.columns.user": cols.user, "input.columns.item": cols.item,
                         "input.columns.ts": cols.ts, "input.columns.event": cols.event,
                         "input.columns.value": cols.value}, "interaction log")
    ts_format = cfg.ts_format
    if cols.ts is not None and isinstance(df.schema[cols.ts].dataType, (T.TimestampType, T.DateType)):
        ts_format = "iso"
    source_cols = [c for c in df.columns if c != S.CORRUPT]
    corrupt = F.col(S.CORRUPT) if S.CORRUPT in df.columns else F.lit(None).cast("string")
    raw = F.coalesce(corrupt, F.to_json(F.struct(*[F.col(c) for c in source_cols])))

    def text(name: str | None):
        return F.col(name).cast("string") if name else F.lit(None).cast("string")

    return df.select(
        text(cols.user).alias(S.USER_ID), text(cols.item).alias(S.ITEM_ID),
        text(cols.ts).alias(S.TS), text(cols.event).alias(S.EVENT),
        text(cols.value).alias(S.VALUE), raw.alias(S.RAW), corrupt.alias(S.CORRUPT),
    ), ts_format
