"""The one typed configuration: dataclass defaults, then YAML files, then ``--set a.b=c``.

Every key is checked against the dataclasses below: an unknown key or a value of the wrong type
is refused with a message that names the full key (``prepare.split.method``), so a typo in a
nightly config fails the run at once instead of silently falling back to a default.
"""
from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from recsys.errors import ConfigError

PACKAGE_DATA = Path(__file__).resolve().parent / "data"
PACKAGE_SCHEME = "package:"
TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class PathsConfig:
    root: str = "var"  # local path or URI (hdfs://, s3a://, file://); everything lives under it


@dataclass
class SparkConfig:
    master: str = "local[*]"  # used only when not launched by spark-submit
    app_name: str = "recsys"
    driver_memory: str = "4g"  # likewise only for a session this code starts itself
    shuffle_partitions: int = 8
    hive: bool = True  # Hive catalogue; locally embedded Derby under <root>/metastore_db
    conf: dict[str, str] = field(default_factory=dict)  # any extra spark.* settings


@dataclass
class ColumnsConfig:
    """Which columns of the log hold what."""
    user: str = "user_id"
    item: str = "item_id"
    ts: str | None = "ts"  # None: the log has no time (a play-count export); see README
    event: str | None = None
    value: str | None = None


@dataclass
class SourceConfig:
    """Where a table comes from: a path (Parquet, CSV, JSON lines) or a catalogue table."""
    path: str | None = None
    table: str | None = None
    format: str = "parquet"  # parquet | csv | json | table
    sep: str = ","
    header: bool = True
    names: list[str] = field(default_factory=list)  # column names of a header-less CSV
    encoding: str = "UTF-8"


@dataclass
class InputConfig(SourceConfig):
    columns: ColumnsConfig = field(default_factory=ColumnsConfig)
    ts_format: str = "unix"  # unix | unix_ms | iso | a Spark datetime pattern


@dataclass
class TagTableConfig(SourceConfig):
    """A table of (user, item, tag[, ts]) rows, as tagging services export them: each item's
    most used tags become one of its features."""
    item: str = "item_id"
    tag: str = "tag"
    user: str | None = None  # the tagging user's column: erased users' tags are left out


@dataclass
class SideTableConfig(SourceConfig):
    """A user or item attribute table joined on `key` to the log's ids."""
    key: str = ""
    categorical: list[str] = field(default_factory=list)
    numeric: list[str] = field(default_factory=list)
    buckets: dict[str, list[float]] = field(default_factory=dict)  # numeric column -> edges
    multi_hot: dict[str, list[str]] = field(default_factory=dict)  # feature -> 0/1 columns
    date: str | None = None  # e.g. an item's release date, turned into an age in days
    date_format: str = "yyyy-MM-dd"
    # Lists of values, encoded through a vocabulary built in prepare (prep/vocab.py):
    multi_valued: dict[str, str] = field(default_factory=dict)  # column -> separator ("A|B")
    text: list[str] = field(default_factory=list)  # free-text columns (titles): their words
    tags: TagTableConfig | None = None  # items: their most used tags from a tag table
    min_count: int = 2  # a value, word or tag in fewer rows than this is "unknown" (id 1)
    max_vocab: int = 50000  # the most frequent values per list feature
    max_values: int = 8  # multi-valued columns and tags: values kept per row
    max_tokens: int = 16  # text columns: words kept per row


@dataclass
class SplitConfig:
    method: str = "temporal"  # temporal | leave_last | random
    valid_fraction: float = 0.1
    valid_n: int | None = None  # leave_last: newest n per user instead of a fraction
    seed: int = 42


@dataclass
class WeightConfig:
    """How a (user, item) pair's confidence is built from its events."""
    method: str = "events"  # events | value | rating
    # value: the pair's summed value (plays, seconds), capped at this quantile of all pairs'
    # sums (None: no cap), then transformed (log1p | none).
    cap_quantile: float | None = None
    transform: str = "log1p"
    # rating: the pair's latest rating (the highest without time); below this it is not a
    # positive, only excluded from the user's recommendations as seen.
    threshold: float | None = None


@dataclass
class PrepareConfig:
    max_reject_share: float = 0.05
    # Event type -> implicit confidence. Empty: the log has no event column, every event weighs
    # `default_weight`. Event types not listed here are rejected as unknown.
    event_weights: dict[str, float] = field(default_factory=dict)
    default_weight: float = 1.0
    weight: WeightConfig = field(default_factory=WeightConfig)
    value_range: list[float] | None = None  # [min, max] inclusive
    future_tolerance_hours: float = 1.0  # timestamps later than now + this are rejected
    max_events_per_user_day: int | None = None  # abuse filter: drop users above it on any day
    min_user_interactions: int = 5
    min_item_interactions: int = 5
    split: SplitConfig = field(default_factory=SplitConfig)
    # Parquet layout: Petastorm shards by row group, so every dataset gets at least
    # `min_row_groups` of them (workers stay balanced) and none above `max_rows_per_row_group`.
    min_row_groups: int = 16
    max_rows_per_row_group: int = 1_000_000
    # `histories`: each user's newest rows (train and valid) as fixed-length lists, for the
    # history models; older rows are left out of it (and counted in the manifest).
    history_len: int = 200


MODELS = ("mf", "neumf", "two_tower", "lightgcn", "sasrec", "gru4rec", "multvae", "ease", "als")
LOSSES = ("bpr", "softmax", "bce")


OPTIMIZERS = ("sparse_adam", "rowwise_adagrad", "adam")
HISTORY_WINDOWS = ("newest", "random", "all")
# Settings per model over TrainConfig's. Chosen on the validation rows of MovieLens-100k,
# except sampled_negatives of the pair models (a catalogue above full_softmax_max_items):
# 128 shared negatives (or a pool of 128 for per-row negatives) keep a step at B + 128 item
# rows (README, training at scale).
# mf: row-wise Adagrad at 0.05 (validation NDCG@10 0.176 against 0.169 for lazy Adam at 0.005
# and 0.171 at 0.1) trains 1.3x as fast at 1M users x 100k items (README, training at scale).
# mf, lightgcn, als: a row's weight halves every 10 rows back in its user's log (validation
# NDCG@10 0.169 against 0.164 for 30 and 0.134 without (mf); 0.177 / 0.161 (lightgcn); README).
PER_MODEL: dict[str, dict[str, Any]] = {
    "mf": {"loss": "softmax", "weight_decay": 1.0e-4, "dim": 128, "epochs": 50, "patience": 5,
           "sampled_negatives": 128, "recency_half_life": 10.0, "optimizer": "rowwise_adagrad",
           "table_lr": 0.05},
    "neumf": {"sampled_negatives": 128},
    # lightgcn: the softmax over the catalogue measured 0.1896 on bench-quality against BPR's
    # 0.1590 (README); propagation learns slowly, hence more epochs and patience.
    "lightgcn": {"loss": "softmax", "epochs": 100, "patience": 10, "sampled_negatives": 128,
                 "recency_half_life": 10.0},
    "als": {"recency_half_life": 10.0},
    "two_tower": {"sampled_negatives": 128},
    "sasrec": {"dim": 128, "dropout": 0.3, "lr": 0.002, "max_len": 100, "weight_decay": 0.0,
               "epochs": 100, "patience": 10},
    "gru4rec": {"dim": 128, "dropout": 0.3, "lr": 0.002, "max_len": 100, "weight_decay": 0.0,
                "blocks": 1, "epochs": 100, "patience": 10},
    # multvae: trained on each whole history, scored from the newest 10 items (validation
    # NDCG@10 0.174, against 0.168 for 20, 0.146 for 50, and 0.151 trained and scored on the
    # newest 20; README, quality).
    "multvae": {"lr": 0.001, "weight_decay": 0.0, "epochs": 400, "patience": 50, "max_len": 10,
                "history_window": "all"},
}


@dataclass
class TrainConfig:
    # One model (mf | neumf | two_tower | lightgcn | sasrec | gru4rec | multvae | ease | als), or None: the
    # night trains every model of `candidates`, blends the best, and publishes the winner on
    # validation (a full bake-off every `select_every` days; the winner alone in between).
    model: str | None = None
    candidates: list[str] = field(default_factory=lambda: ["sasrec", "gru4rec", "ease", "mf", "als"])
    blend_members: int = 3  # blends of up to this many of the best candidates (1: no blends)
    blend_weights: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75, 0.9])  # of the first of two
    select_every: int = 7  # days between bake-offs
    # A bake-off replaces the published model (or blend) only with one better on validation by
    # more than this many paired standard errors over the same users (0: the best, ties kept).
    switch_se: float = 1.0
    num_processes: int = 2  # data-parallel workers launched by TorchDistributor
    local_mode: bool = True  # workers on the driver's machine; false: on Spark executors
    use_gpu: bool | None = None  # None: the GPU when torch sees one (NCCL), else CPU (Gloo)
    epochs: int = 20
    batch_size: int = 1024  # positives per step per worker
    lr: float = 0.005
    lr_schedule: str = "cosine"  # cosine | constant
    # Id tables (user, item, category embeddings): sparse_adam (lazy Adam) or rowwise_adagrad
    # update only the rows a step touches, and workers exchange only those rows; adam updates
    # and exchanges every row every step. Dense layers (MLPs, attention) always use Adam.
    optimizer: str = "sparse_adam"
    # The row optimiser's learning rate (null: lr). Row-wise Adagrad divides by the root of a
    # row's summed squared gradients, not by Adam's running average, so it wants a larger one.
    table_lr: float | None = None
    weight_decay: float = 1.0e-6
    l2: float = 0.0  # factorised table models: λ (|p_u|² + |q_i|²) per training row
    dropout: float = 0.1
    dim: int = 64  # size of the user and item representations
    hidden: list[int] = field(default_factory=lambda: [128, 64])  # MLP layers (neumf, two_tower)
    loss: str | None = None  # bpr | softmax | bce; None: bpr for mf, bce for neumf, softmax else
    negatives: int = 8  # bpr, bce: sampled per positive, fresh every step
    negative_sampling: str = "uniform"  # uniform | popularity
    popularity_alpha: float = 0.75  # popularity sampling weight: count ** alpha
    temperature: float = 0.2  # softmax loss of two_tower
    id_dropout: float = 0.2  # two_tower, item_content: drop id embeddings so features alone carry new ids
    # sasrec, gru4rec: add the content item encoder (the item side table's text, values and
    # categories: models/content.py) to every item embedding, which also places new items.
    item_content: bool = False
    use_weights: bool = True  # weight each positive's loss by log1p(event weight)
    # Pair models and als: also weight a row by 0.5 ** (recency / this), its user's newest row counting
    # 1 and the one `recency_half_life` rows older 0.5 (null: every row alike; no effect on a
    # log without timestamps).
    recency_half_life: float | None = None
    patience: int = 3  # early stopping: epochs without a better validation NDCG@10
    # Early stopping neither stops nor picks an epoch before this many (at most `epochs`): on
    # few validation rows the first epochs can score best by chance, before the model has learnt.
    min_epochs: int = 1
    eval_k: int = 10
    eval_users: int = 20000  # validation users scored each epoch (a fixed sample above this)
    shuffle_buffer: int = 65536  # rows mixed across row groups before batching
    reader_workers: int = 1  # Petastorm threads per worker; 1 keeps the row order repeatable
    progress_seconds: float = 30.0  # a progress line (steps, samples/s, time left) this often
    seed: int = 42
    # After early stopping has chosen the number of epochs, train again from the same initial
    # weights on train + valid for that many; those weights are published.
    refit: bool = True
    # History models (sasrec, gru4rec, multvae, ease): a user is their newest max_len items.
    max_len: int = 200  # at most prepare.history_len
    history_batch_size: int = 32  # users per step per worker
    # sasrec, gru4rec, multvae: what a training step reads per user: newest (max_len items) |
    # random (max_len items ending anywhere in the history, drawn each epoch) | all (the whole
    # history prepare kept). Scoring always reads the newest max_len.
    history_window: str = "newest"
    blocks: int = 2  # sasrec: transformer blocks; gru4rec: GRU layers
    graph_layers: int = 3  # lightgcn: propagation steps over the user-item graph
    # lightgcn: neighbours a training step reads per node per layer, sampled (null: all of them,
    # the exact propagation, whose step cost grows with the graph).
    graph_fanout: int | None = 5
    # lightgcn: every worker holds the graph in memory (about 24 bytes an edge): refused above.
    graph_max_edges: int = 20_000_000
    heads: int = 2  # sasrec: attention heads (dim must be a multiple)
    # The softmax loss (sequence models; mf and two_tower) scores every item up to this many,
    full_softmax_max_items: int = 20000
    # ... above it this many negatives shared by the step's rows (logQ-corrected); bpr and bce
    # then draw each row's `negatives` from a pool of this many shared by the step.
    sampled_negatives: int = 1024
    vae_hidden: list[int] = field(default_factory=lambda: [600, 200])  # multvae: hidden ..., latent
    vae_dropout: float = 0.5  # multvae: share of a user's items dropped from the input
    kl_beta: float = 0.2  # multvae: the KL weight, reached after kl_anneal_epochs
    kl_anneal_epochs: int = 20
    ease_lambdas: list[float] = field(default_factory=lambda: [50.0, 100.0, 250.0, 500.0, 1000.0])
    # ease: how many of a user's newest items its scores sum over, one chosen on validation with
    # λ (capped at max_len; without timestamps max_len alone)
    ease_max_lens: list[int] = field(default_factory=lambda: [10, 20, 50, 200])
    ease_max_items: int = 20000  # ease inverts an items x items matrix: refused above this
    # als: Spark MLlib's implicit ALS (rank train.dim), one setting of the grid chosen on validation.
    # Confidence is 1 + alpha x weight, so the best alpha follows the weights' scale: the grid
    # spans two decades (MovieLens chose 10 on recency-decayed events, 0.1 on log1p ratings).
    # regParam 1.0 left the grid: never ahead on validation by more than noise, and on the rows
    # without time it tied there (0.2061 vs 0.2058) and lost 0.027 NDCG@10 on the test rows.
    als_regs: list[float] = field(default_factory=lambda: [0.1])
    als_alphas: list[float] = field(default_factory=lambda: [0.1, 1.0, 10.0])
    als_max_iter: int = 10
    # Settings per model over the ones above. The shipped ones were chosen on the validation
    # rows of MovieLens-100k (README, results).
    per_model: dict[str, dict[str, Any]] = field(default_factory=lambda: {
        k: dict(v) for k, v in PER_MODEL.items()})

    def for_model(self, name: str) -> "TrainConfig":
        """These settings with `per_model[name]` applied (already checked by `validate`)."""
        override = self.per_model.get(name)
        if not override:
            return self
        return build(TrainConfig, {**dataclasses.asdict(self), **override}, "train")


@dataclass
class AlsConfig:
    enabled: bool = True
    rank: int = 64
    max_iter: int = 10
    reg: float = 0.1
    alpha: float = 10.0  # implicit-feedback confidence scale


@dataclass
class EvaluateConfig:
    ks: list[int] = field(default_factory=lambda: [10, 100])
    max_users: int | None = 50_000  # validation users evaluated (a fixed sample above this)
    als: AlsConfig = field(default_factory=AlsConfig)
    ease_max_items: int = 20_000  # EASE inverts an items x items matrix: skipped above this
    ease_lambda: float = 250.0
    # Intra-list diversity by this column of the items table (a categorical, multi-valued or
    # multi-hot one, e.g. genres); None: by score.category_column if set, else not measured.
    category_column: str | None = None


@dataclass
class GateConfig:
    """Publish only a model that beats popularity and has not regressed from the published one."""
    enabled: bool = True
    metric: str = "ndcg@10"
    min_lift_over_popularity: float = 0.0  # model > popularity * (1 + this)
    max_drop_from_published: float = 0.1  # model >= published model * (1 - this)
    # Exposure bounds against the published model's, at the K of `metric`, from the evaluate
    # report of each (None: off). Relative, like the above: coverage >= published * (1 - this).
    max_coverage_drop: float | None = None
    max_gini_increase: float | None = None  # absolute: gini <= published gini + this


def metric_k(metric: str) -> int | None:
    """The K of a `name@K` metric key, None if it names none."""
    name, _, k = metric.rpartition("@")
    return int(k) if name and k.isdigit() else None


@dataclass
class ItemListConfig(SourceConfig):
    """A list of items (a file or a table) with the original item id in `column`."""
    column: str = "item_id"


@dataclass
class UserListConfig(SourceConfig):
    """A list of users (a file or a table) with the original user id in `column`."""
    column: str = "user_id"


@dataclass
class PrivacyConfig:
    # Users whose data must go (a deletion list, as privacy teams keep them): from the next run
    # on, in no snapshot, model artifact or table partition (README, privacy).
    erase: UserListConfig | None = None
    # Users who opted out of personalisation: the non-personalised list, source = opted_out.
    opt_out: UserListConfig | None = None


@dataclass
class ScoreConfig:
    model: str | None = None  # None: train.model
    top_n: int = 100
    table: str = "recsys.user_recommendations"  # a plain db.table identifier
    retention_days: int = 30  # partitions older than this (by ds) are dropped after a publish
    users_table: str | None = None  # score only the user_id values of this table
    active_days: float | None = None  # score only users active in the snapshot's last D days
    allow_items: ItemListConfig | None = None  # only these items may be recommended
    block_items: ItemListConfig | None = None  # these never
    category_column: str | None = None  # a categorical column of the items table ...
    max_per_category: int | None = None  # ... and at most this many items of one value each
    candidates: int = 400  # two-stage models: candidates re-ranked per user (at least top_n)
    # Items of the catalogue (the items side table) with no interactions yet: never recommended,
    # unless new_items and the model places them from their content (two_tower with item
    # features); then new_item_share of each user's top_n is reserved for the best of them.
    new_items: bool = False
    new_item_share: float = 0.0
    batch_cells: int = 8_000_000  # users x items scored at once (memory per Python worker)
    # A reason on every row (`reason`, and `because_item_id`: the item of the user's newest
    # `reason_history` that the model finds most similar to the recommendation).
    reasons: bool = True
    reason_history: int = 50
    # Coverage and exposure concentration of the whole published partition, in the manifest:
    # one more Spark job over the partition (2.8 s of a 31 s job at 200k users, bench-score).
    table_exposure: bool = True
    # arrow: the Python workers write the Parquet files (fast; the table location must be one
    # pyarrow opens: local, hdfs://, s3://, s3a://, gs://); spark: Spark's writer (any Hadoop FS)
    writer: str = "arrow"
    gate: GateConfig = field(default_factory=GateConfig)


@dataclass
class LeaseConfig:
    """One run per ds: every job holds `<root>/leases/<ds>.lease` while it works (recsys/lease.py)."""
    wait_s: float = 0.0  # another run holds the ds: 0 refuses at once, else wait up to this long
    heartbeat_s: float = 30.0  # the holder refreshes its lease this often
    # A lease from another machine whose heartbeat is older than this is dead and taken over (on
    # the holder's own machine a dead pid decides at once).
    stale_after_s: float = 300.0


@dataclass
class Config:
    dataset: str = "events"  # names the folder under <root>/data
    paths: PathsConfig = field(default_factory=PathsConfig)
    spark: SparkConfig = field(default_factory=SparkConfig)
    input: InputConfig = field(default_factory=InputConfig)
    users: SideTableConfig | None = None
    items: SideTableConfig | None = None
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    lease: LeaseConfig = field(default_factory=LeaseConfig)

    def validate(self) -> "Config":
        """Checks that span several keys (types are already checked by the loader)."""
        _one_of("input.format", self.input.format, ("parquet", "csv", "json", "table"))
        _one_of("prepare.split.method", self.prepare.split.method,
                ("temporal", "leave_last", "random"))
        if self.train.model is not None:
            _one_of("train.model", self.train.model, MODELS)
        if not self.train.candidates:
            raise ConfigError("train.candidates is empty: list the models the night chooses from, "
                              "or name one with train.model")
        for name in self.train.candidates:
            _one_of("train.candidates entry", name, MODELS)
        if len(set(self.train.candidates)) != len(self.train.candidates):
            raise ConfigError(f"train.candidates names a model twice: {self.train.candidates}")
        if self.train.blend_members < 1 or self.train.select_every < 1:
            raise ConfigError("train.blend_members and train.select_every must be at least 1")
        if self.train.switch_se < 0:
            raise ConfigError(f"train.switch_se must be at least 0, got {self.train.switch_se}")
        if any(not 0 < w < 1 for w in self.train.blend_weights):
            raise ConfigError(f"train.blend_weights must lie strictly between 0 and 1, got {self.train.blend_weights}")
        if self.train.loss is not None:
            _one_of("train.loss", self.train.loss, LOSSES)
        _one_of("train.negative_sampling", self.train.negative_sampling, ("uniform", "popularity"))
        _one_of("train.lr_schedule", self.train.lr_schedule, ("cosine", "constant"))
        _one_of("train.optimizer", self.train.optimizer, OPTIMIZERS)
        if self.train.progress_seconds <= 0:
            raise ConfigError(f"train.progress_seconds must be positive, got {self.train.progress_seconds}")
        if self.prepare.history_len < 1:
            raise ConfigError(f"prepare.history_len must be at least 1, got {self.prepare.history_len}")
        for name, override in self.train.per_model.items():
            _one_of("train.per_model key", name, MODELS)
            if not isinstance(override, dict):
                raise ConfigError(f"train.per_model.{name} must be a mapping of train keys")
            for key in ("model", "per_model"):
                if key in override:
                    raise ConfigError(f"train.per_model.{name}.{key} cannot be set per model")
            build(TrainConfig, override, f"train.per_model.{name}")  # names a bad key or type
        for name in MODELS:
            _check_train(self.train.for_model(name), name)
        if not self.evaluate.ks or min(self.evaluate.ks) < 1:
            raise ConfigError("evaluate.ks must list cut-offs of at least 1")
        if self.score.model is not None:
            _one_of("score.model", self.score.model, (*MODELS, "blend"))
        if not TABLE_NAME.match(self.score.table):
            raise ConfigError(f"score.table must be a plain db.table identifier, got "
                              f"{self.score.table!r}")
        _one_of("score.writer", self.score.writer, ("arrow", "spark"))
        if self.score.top_n < 1:
            raise ConfigError("score.top_n must be at least 1")
        if not 0 <= self.score.new_item_share < 1:
            raise ConfigError(f"score.new_item_share must be in [0, 1), got {self.score.new_item_share}")
        if self.score.reason_history < 1:
            raise ConfigError(f"score.reason_history must be at least 1, got {self.score.reason_history}")
        if self.score.new_item_share > 0 and not self.score.new_items:
            raise ConfigError("score.new_item_share reserves slots for new items: set score.new_items: true")
        if (self.score.category_column is None) != (self.score.max_per_category is None):
            raise ConfigError("score.category_column and score.max_per_category go together")
        self._check_gate()
        if self.input.format == "table" and not self.input.table:
            raise ConfigError("input.table is required when input.format is 'table'")
        if self.input.format != "table" and not self.input.path:
            raise ConfigError("input.path is required (or set input.format: table and input.table)")
        frac = self.prepare.split.valid_fraction
        if not 0 < frac < 1:
            raise ConfigError(f"prepare.split.valid_fraction must be in (0, 1), got {frac}")

        if not 0 <= self.prepare.max_reject_share <= 1:
            raise ConfigError("prepare.max_reject_share must be in [0, 1]")
        vr = self.prepare.value_range
        if vr is not None and (len(vr) != 2 or vr[0] > vr[1]):
            raise ConfigError(f"prepare.value_range must be [min, max], got {vr}")
        if self.prepare.event_weights and not self.input.columns.event:
            raise ConfigError("prepare.event_weights is set but input.columns.event is not")
        self._check_weight()
        self._check_time()
        self._check_lease()
        for name, side in (("users", self.users), ("items", self.items)):
            if side is None:
                continue
            if not side.key:
                raise ConfigError(f"{name}.key is required: the column that holds the id")
            for key in ("min_count", "max_vocab", "max_values", "max_tokens"):
                if getattr(side, key) < 1:
                    raise ConfigError(f"{name}.{key} must be at least 1, got {getattr(side, key)}")
            if any(not sep for sep in side.multi_valued.values()):
                raise ConfigError(f"{name}.multi_valued maps a column to its separator, e.g. {{genres: '|'}}")
            if side.tags is not None and (side.tags.path or side.tags.table) is None:
                raise ConfigError(f"{name}.tags needs a path or a table")
        if self.users is not None and self.users.tags is not None:
            raise ConfigError("users.tags: a tag table describes items; set it under items.tags")
        for key in ("erase", "opt_out"):
            lst = getattr(self.privacy, key)
            if lst is not None and (lst.path or lst.table) is None:
                raise ConfigError(f"privacy.{key} needs a path or a table (format: table) of user ids")
        return self


    def _check_gate(self) -> None:
        g = self.score.gate
        for key in ("max_coverage_drop", "max_gini_increase"):
            bound = getattr(g, key)
            if bound is None:
                continue
            if not 0 <= bound <= 1:
                raise ConfigError(f"score.gate.{key} must be in [0, 1] (null: off), got {bound}")
            k = metric_k(g.metric)
            if k is None:
                raise ConfigError(f"score.gate.{key} is measured at the K of score.gate.metric, and "
                                  f"{g.metric!r} names none (e.g. ndcg@10)")
            if k not in self.evaluate.ks:
                raise ConfigError(f"score.gate.{key} is measured at K={k} (score.gate.metric "
                                  f"{g.metric}), which evaluate.ks {self.evaluate.ks} does not include")

    def _check_weight(self) -> None:
        w = self.prepare.weight
        _one_of("prepare.weight.method", w.method, ("events", "value", "rating"))
        _one_of("prepare.weight.transform", w.transform, ("log1p", "none"))
        if w.method != "events" and not self.input.columns.value:
            raise ConfigError(f"prepare.weight.method={w.method} reads the value column, and "
                              "input.columns.value is not set")
        if w.method == "rating" and w.threshold is None:
            raise ConfigError("prepare.weight.method=rating needs prepare.weight.threshold "
                              "(the lowest rating that counts as a positive)")
        if w.cap_quantile is not None and not 0 < w.cap_quantile <= 1:
            raise ConfigError(f"prepare.weight.cap_quantile must be in (0, 1], got {w.cap_quantile}")

    def _check_lease(self) -> None:
        lease = self.lease
        if lease.wait_s < 0:
            raise ConfigError(f"lease.wait_s must be at least 0 (0: refuse at once), got {lease.wait_s}")
        if lease.heartbeat_s <= 0:
            raise ConfigError(f"lease.heartbeat_s must be positive, got {lease.heartbeat_s}")
        if lease.stale_after_s < 2 * lease.heartbeat_s:
            raise ConfigError(f"lease.stale_after_s must be at least twice lease.heartbeat_s "
                              f"(a late beat must not make a live holder look dead), got {lease.stale_after_s} "
                              f"with lease.heartbeat_s={lease.heartbeat_s}")

    def _check_time(self) -> None:
        """A log without timestamps (input.columns.ts: null) refuses what needs time."""
        if self.input.columns.ts is not None:
            return
        method = self.prepare.split.method
        if method in ("temporal", "leave_last"):
            raise ConfigError(f"prepare.split.method={method} orders rows by time, and the log has "
                              "no timestamp column (input.columns.ts: null): use "
                              "prepare.split.method=random")
        if self.prepare.max_events_per_user_day is not None:
            raise ConfigError("prepare.max_events_per_user_day counts events per day, and the log "
                              "has no timestamp column (input.columns.ts: null): set it to null")
        if self.score.active_days is not None:
            raise ConfigError("score.active_days selects users by their last event, and the log has "
                              "no timestamp column (input.columns.ts: null): set it to null")


def _check_train(t: TrainConfig, model: str) -> None:
    """The train settings one model runs with (after train.per_model)."""
    override = t.per_model.get(model, {})

    def key(name: str) -> str:
        return f"train.per_model.{model}.{name}" if name in override else f"train.{name}"

    for name in ("num_processes", "epochs", "batch_size", "dim", "negatives", "eval_k",
                 "history_batch_size", "blocks", "heads", "sampled_negatives", "kl_anneal_epochs",
                 "als_max_iter", "graph_max_edges"):
        if getattr(t, name) < 1:
            raise ConfigError(f"{key(name)} must be at least 1, got {getattr(t, name)}")
    if t.graph_layers < 0:
        raise ConfigError(f"{key('graph_layers')} must be at least 0, got {t.graph_layers}")
    if t.graph_fanout is not None and t.graph_fanout < 1:
        raise ConfigError(f"{key('graph_fanout')} must be at least 1 (or null: every neighbour), "
                          f"got {t.graph_fanout}")
    for name in ("lr", "table_lr"):
        if getattr(t, name) is not None and getattr(t, name) <= 0:
            raise ConfigError(f"{key(name)} must be positive, got {getattr(t, name)}")
    if t.max_len < 1:
        raise ConfigError(f"{key('max_len')} must be at least 1, got {t.max_len}")
    if model == "sasrec" and t.dim % t.heads:
        raise ConfigError(f"{key('dim')}={t.dim} must be a multiple of {key('heads')}={t.heads} (sasrec)")
    if len(t.vae_hidden) < 2 or min(t.vae_hidden) < 1:
        raise ConfigError(f"{key('vae_hidden')} must list at least two sizes (hidden..., latent), "
                          f"got {t.vae_hidden}")
    if not t.ease_lambdas or min(t.ease_lambdas) <= 0:
        raise ConfigError(f"{key('ease_lambdas')} must list positive values, got {t.ease_lambdas}")
    if not t.ease_max_lens or min(t.ease_max_lens) < 1:
        raise ConfigError(f"{key('ease_max_lens')} must list lengths of at least 1, got {t.ease_max_lens}")
    if not t.als_regs or not t.als_alphas or min(t.als_regs + t.als_alphas) <= 0:
        raise ConfigError(f"{key('als_regs')} and {key('als_alphas')} must list positive values")
    _one_of(key("history_window"), t.history_window, HISTORY_WINDOWS)
    if t.recency_half_life is not None and t.recency_half_life <= 0:
        raise ConfigError(f"{key('recency_half_life')} must be positive or null, got {t.recency_half_life}")
    if not 0 <= t.vae_dropout < 1:
        raise ConfigError(f"{key('vae_dropout')} must be in [0, 1), got {t.vae_dropout}")


def _one_of(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(allowed)}; got {value!r}")


# --- loading -------------------------------------------------------------------------------

def load_config(path: str | os.PathLike | None = None, overrides: list[str] = ()) -> Config:
    """Defaults, then `default.yaml` beside `path` (if any), then `path`, then overrides."""
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        default = path.parent / "default.yaml"
        if default.is_file() and default.resolve() != path.resolve():
            _merge(tree, _read_yaml(default))
        _merge(tree, _read_yaml(path))
    for item in overrides:
        _override(tree, item)
    return build(Config, tree).validate()


def parse_override(item: str) -> dict[str, Any]:
    """``a.b.c=value`` -> ``{"a": {"b": {"c": value}}}``, the value read as YAML (``3``, ``null``),
    or as text where it is not YAML (``input.sep=,``)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value, got {item!r}")
    value = _value(raw)
    for part in reversed(key.strip().split(".")):
        value = {part: value}
    return value


def _read_yaml(path: Path) -> dict[str, Any]:
    with open(path) as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data


def _merge(into: dict[str, Any], other: dict[str, Any]) -> None:
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _override(tree: dict[str, Any], item: str) -> None:
    """Apply `a.b.c=value`: the key it names becomes exactly that value. Files merge into each
    other, but a mapping given on the command line replaces the one there, so
    `--set train.per_model={}` clears the shipped per-model settings."""
    parse_override(item)  # the same checks and messages
    key, _, raw = item.partition("=")
    *path, last = key.strip().split(".")
    node = tree
    for part in path:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[last] = _value(raw)


def _value(raw: str) -> Any:
    """An override's value read as YAML; text that is not YAML (a separator `,`) as itself."""
    if not raw.strip():
        return ""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def build(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass `cls` from a mapping, checking every key and type."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown config key {where}{unknown[0]} "
                          f"(known: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(hints[k], v, f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    if tp is Any:  # checked where it is used (train.per_model: against TrainConfig)
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(inner, value, key)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        (inner,) = typing.get_args(tp)
        return [_coerce(inner, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        _, inner = typing.get_args(tp)
        if typing.get_origin(inner) is not dict:
            value = _flatten(value)  # --set spark.conf.spark.ui.enabled=x names one key
        return {str(k): _coerce(inner, v, f"{key}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", value.strip()):
        return float(value)  # YAML 1.1 reads 1e-5 (no dot) as a string
    if tp is str and isinstance(value, bool):
        return str(value).lower()  # YAML reads `--set spark.conf.x=false` as a bool
    if tp is str and isinstance(value, (int, float)):
        return str(value)  # ... and `sep: 1` or `--set spark.conf.x=2` as numbers
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(f"{key} must be {tp.__name__}, got {value!r} ({type(value).__name__})")
    return value


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in tree.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(_flatten(v, f"{name}."))
        else:
            flat[name] = v
    return flat


def to_dict(cfg: Config) -> dict[str, Any]:
    """The resolved configuration, as saved in manifests and artifacts."""
    return dataclasses.asdict(cfg)


def resolve_data_path(path: str) -> str:
    """``package:ml-100k/u.data`` -> the file shipped inside the recsys package."""
    if path.startswith(PACKAGE_SCHEME):
        return str(PACKAGE_DATA / path[len(PACKAGE_SCHEME):])
    return path
