"""The typed configuration: defaults, files, overrides, and errors that name the key."""
from __future__ import annotations

import pytest
import yaml

from recsys.config import Config, load_config, resolve_data_path, to_dict
from recsys.errors import ConfigError

from conftest import CONF


def test_default_yaml_matches_the_dataclass_defaults():
    with open(CONF / "default.yaml") as fh:
        assert yaml.safe_load(fh) == to_dict(Config())


def test_file_then_overrides_take_precedence(tmp_path):
    cfg = load_config(CONF / "movielens.yaml", ["prepare.split.method=leave_last",
                                                "prepare.split.valid_n=2", "spark.shuffle_partitions=3"])
    assert cfg.dataset == "movielens"
    assert cfg.input.columns.value == "rating"
    assert cfg.prepare.split.method == "leave_last" and cfg.prepare.split.valid_n == 2
    assert cfg.spark.shuffle_partitions == 3
    assert cfg.users.buckets["age"] == [18.0, 25.0, 35.0, 45.0, 50.0, 56.0]


@pytest.mark.parametrize("override, message", [
    ("prepare.splt.method=random", "unknown config key prepare.splt"),
    ("prepare.min_user_interactions=five", "prepare.min_user_interactions must be int"),
    ("prepare.split.method=shuffle", "prepare.split.method must be one of"),
    ("prepare.event_weights=3", "prepare.event_weights must be a mapping"),
    ("prepare.split.valid_fraction=1.5", "prepare.split.valid_fraction must be in (0, 1)"),
    ("nonsense", "--set expects key=value"),
    ("train.optimizer=sgd", "train.optimizer must be one of"),
    ("train.table_lr=0", "train.table_lr must be positive, got 0"),
    ("train.per_model.mf.lr=-0.1", "train.per_model.mf.lr must be positive, got -0.1"),
    ("train.per_model.lightgcn.graph_fanout=0", "train.per_model.lightgcn.graph_fanout must be at least 1"),
    ("score.gate.max_gini_increase=1.5", "score.gate.max_gini_increase must be in [0, 1] (null: off), got 1.5"),
    ("score.gate.max_coverage_drop=-0.1", "score.gate.max_coverage_drop must be in [0, 1]"),
    ("score.gate.max_coverage_drop=high", "score.gate.max_coverage_drop must be float"),
    ("evaluate.category_column=[genres]", "evaluate.category_column must be str"),
])
def test_bad_keys_and_types_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(CONF / "movielens.yaml", [override])
    assert message in str(err.value)


def test_exposure_bounds_need_their_k_measured_by_evaluate():
    bound = "score.gate.max_gini_increase=0.01"
    cfg = load_config(CONF / "movielens.yaml", [bound])
    assert cfg.score.gate.max_gini_increase == 0.01 and cfg.score.gate.max_coverage_drop is None
    with pytest.raises(ConfigError, match=r"score.gate.max_gini_increase is measured at K=10 "
                                          r"\(score.gate.metric ndcg@10\), which evaluate.ks \[5\] does not include"):
        load_config(CONF / "movielens.yaml", [bound, "evaluate.ks=[5]"])
    with pytest.raises(ConfigError, match="score.gate.max_coverage_drop is measured at the K of "
                                          "score.gate.metric, and 'ndcg' names none"):
        load_config(CONF / "movielens.yaml", ["score.gate.max_coverage_drop=0.1", "score.gate.metric=ndcg"])
    load_config(CONF / "movielens.yaml", ["score.gate.metric=ndcg", "evaluate.ks=[5]"])  # no bound, no check


def test_unknown_key_in_a_file_names_it(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("input:\n  path: x\n  colums: {user: u}\n")
    with pytest.raises(ConfigError, match=r"unknown config key input\.colums"):
        load_config(path)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_package_paths_resolve_to_the_bundled_movielens():
    path = resolve_data_path("package:ml-100k/u.data")
    with open(path) as fh:
        assert sum(1 for _ in fh) == 100_000
