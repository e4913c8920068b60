"""Faults at night that are not covered beside their job: an unreadable input file."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from recsys.prep.pipeline import prepare
from recsys.snapshot import snapshot_path

from conftest import NOW, make_config

DS = "2026-11-24"


def test_an_unreadable_input_file_fails_prepare_and_keeps_the_snapshot(spark, tmp_path):
    log = tmp_path / "log"
    log.mkdir()
    rows = [(f"u{u}", f"i{(u + j) % 9}", 1000 + 10 * j + u) for u in range(12) for j in range(5)]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "ts"])
    frame.iloc[:30].to_parquet(log / "part-0.parquet")
    frame.iloc[30:].to_parquet(log / "part-1.parquet")
    cfg = make_config(tmp_path / "root", f"input.path={log}", "dataset=toy",
                      "prepare.min_user_interactions=1", "prepare.min_item_interactions=1",
                      "prepare.split.method=leave_last", "prepare.split.valid_n=1",
                      "prepare.min_row_groups=2")
    prepare(spark, cfg, DS, now=NOW)
    snap = Path(snapshot_path(cfg.paths.root, cfg.dataset, DS))
    before = {p: p.read_bytes() for p in snap.rglob("*") if p.is_file()}

    good = (log / "part-1.parquet").read_bytes()
    (log / "part-1.parquet").write_bytes(good[: len(good) // 2])  # truncated by a crashed copy
    with pytest.raises(Exception, match="part-1.parquet"):
        prepare(spark, cfg, DS, now=NOW)
    assert {p: p.read_bytes() for p in snap.rglob("*") if p.is_file()} == before
    manifest = json.loads((Path(cfg.paths.root) / "runs" / DS / "prepare.json").read_text())
    assert manifest["status"] == "failed" and "part-1.parquet" in manifest["error"]

    (log / "part-1.parquet").write_bytes(good)  # the file is restored: the re-run completes
    assert prepare(spark, cfg, DS, now=NOW)["counts"]["input_rows"] == 60
