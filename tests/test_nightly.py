"""`recsys run`: the four steps in order, resuming at the step that failed; with no model named,
the night's train step is a bake-off among the candidates."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from recsys.nightly import run_nightly

from conftest import make_config, write_csv

DS = "2026-11-24"


def manifest(root: Path, step: str) -> dict:
    return json.loads((root / "runs" / DS / f"{step}.json").read_text())


def test_run_resumes_at_the_failed_step_and_skips_what_is_done(spark, tmp_path, monkeypatch):
    rows = [f"u{u},i{(u // 8) * 10 + (u + j) % 10},{1000 + 10 * j + u}" for u in range(16) for j in range(7)]
    log = write_csv(tmp_path / "log.csv", "user_id,item_id,ts", rows)
    settings = ["input.format=csv", f"input.path={log}", "dataset=toy",
                "prepare.min_user_interactions=1", "prepare.min_item_interactions=1",
                "prepare.split.method=leave_last", "prepare.split.valid_n=1",
                "prepare.min_row_groups=2", "train.epochs=2", "train.batch_size=16",
                "train.dim=8", "train.hidden=[16]", "evaluate.ks=[5]", "evaluate.als.rank=4",
                "evaluate.als.max_iter=2", "score.top_n=3", "score.table=test.nightly",
                "score.gate.enabled=false", "train.candidates=[mf, ease]", "train.ease_lambdas=[1.0]",
                "train.per_model={}"]
    cfg = make_config(tmp_path, *settings)
    monkeypatch.setenv("RECSYS_FAULT", "evaluate")
    with pytest.raises(RuntimeError, match="injected fault at evaluate"):
        run_nightly(spark, cfg, DS)
    assert manifest(tmp_path, "run")["status"] == "failed"
    assert manifest(tmp_path, "evaluate")["status"] == "failed"
    done = {s: manifest(tmp_path, s)["finished_at"] for s in ("prepare", "train")}

    monkeypatch.delenv("RECSYS_FAULT")
    m = run_nightly(spark, cfg, DS)
    assert m["counts"] == {"prepare": "skipped", "train": "skipped",
                           "evaluate": "completed", "score": "completed"}
    assert {s: manifest(tmp_path, s)["finished_at"] for s in done} == done
    report = tmp_path / "reports" / DS
    html = (report / "index.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', html)
    assert len(images) == 6 and all((report / name).is_file() for name in images)
    assert "leaderboard.png" in images and "Leaderboard" in html
    assert "exposure_by_decile.png" in images and "Beyond accuracy" in html
    board = manifest(tmp_path, "train")["leaderboard"]
    # The two candidates and the blends of the pair, each measured on the validation rows.
    assert {r["name"] for r in board} >= {"mf", "ease", "0.50xmf+0.50xease"} or \
        {r["name"] for r in board} >= {"mf", "ease", "0.50xease+0.50xmf"}
    assert sum(r["winner"] for r in board) == 1
    assert all("ndcg@10_se" in r or "ndcg@5_se" in r for r in board)
    evaluation = json.loads((report / "evaluate.json").read_text())
    assert set(evaluation["baselines"]) == {"popularity", "als", "ease"}
    version = evaluation["model"]["version"]
    assert evaluation["beyond_accuracy_by_version"] == {version: evaluation["model"]["beyond_accuracy"]}
    assert 0 < evaluation["model"]["beyond_accuracy"]["coverage@5"] == evaluation["model"]["metrics"]["coverage@5"]
    assert spark.sql(f"SELECT count(*) FROM test.nightly WHERE ds='{DS}'").first()[0] == 16 * 3

    again = run_nightly(spark, cfg, DS)
    assert set(again["counts"].values()) == {"skipped"}
    changed = run_nightly(spark, make_config(tmp_path, *settings, "train.epochs=3"), DS)
    assert changed["counts"] == {"prepare": "skipped", "train": "completed",
                                 "evaluate": "completed", "score": "completed"}
