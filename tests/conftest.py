"""One local SparkSession for the whole test run, with its Hive catalogue in a temporary dir."""
from __future__ import annotations

import warnings
from datetime import datetime, timezone
from pathlib import Path

import pytest

from recsys.config import Config, load_config

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"
# A fixed "now" so future-timestamp checks do not depend on the day the tests run.
NOW = datetime(2026, 11, 25, tzinfo=timezone.utc)

warnings.filterwarnings("ignore", category=FutureWarning)


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from recsys.session import build_session
    root = tmp_path_factory.mktemp("spark-root")
    cfg = load_config(CONF / "movielens.yaml", [
        f"paths.root={root}", "spark.master=local[2]", "spark.shuffle_partitions=4",
        "spark.driver_memory=2g", "spark.conf.spark.ui.enabled=false",
    ])
    session = build_session(cfg)
    yield session
    session.stop()


def make_config(root: Path, *overrides: str, conf: str | None = None) -> Config:
    """A config for one test: its own root, plus overrides."""
    path = CONF / conf if conf else None
    return load_config(path, [f"paths.root={root}", *overrides])


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def cycle_rows(n_users: int = 40, n_items: int = 24, run: int = 8, seed: int = 0) -> tuple[list[str], dict[str, int]]:
    """A log only a sequence model can learn: every user walks one cycle of items (i00, i01,
    ...) for `run` steps from a random start, so the next item is always the one after the
    last. Returns CSV rows (user_id,item_id,ts) and each user's next item number."""
    import numpy as np
    rng = np.random.default_rng(seed)
    rows, nxt = [], {}
    for u in range(n_users):
        start = int(rng.integers(n_items))
        rows += [f"u{u},i{(start + j) % n_items:02d},{1000 + 10 * j}" for j in range(run)]
        nxt[f"u{u}"] = (start + run) % n_items
    return rows, nxt
