"""Erasure and opt-out: an erased user is in no file the pipeline keeps from the next night on;
an opted-out user gets the non-personalised list."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
from pyspark.sql import functions as F

from recsys import schema as S
from recsys.nightly import run_nightly
from recsys.privacy import flag_erased

from conftest import make_config, write_csv

ERASED = "zz-erase-me-7"  # distinctive: a byte search for it cannot hit anything else
OPTED = "u3"


def test_flag_erased_marks_the_listed_users_rows_and_malformed_lines_that_name_them(spark):
    cols = [S.USER_ID, S.ITEM_ID, S.RAW, S.REASON]
    validated = spark.createDataFrame([
        (ERASED, "i1", None, None),                        # a good row of the user
        (ERASED, "i2", f"{ERASED},i2,later", S.BAD_TIMESTAMP),  # a reject of the user
        (None, None, f'{{"user":"{ERASED}","item":"i3"', S.MALFORMED_LINE),  # names them in its text
        ("u1", "i1", None, None),
        (None, None, "u1,,,x,y", S.MALFORMED_LINE),
        (None, None, f"{ERASED}x,i9", S.MISSING_ITEM),     # a longer id is another user
    ], ", ".join(f"{c} string" for c in cols))
    listed = spark.createDataFrame([(ERASED,), ("nobody",)], f"{S.USER_ID} string")
    got = flag_erased(validated, listed).toPandas()
    assert len(got) == 6
    erased = got[got[S.REASON] == S.ERASED]
    assert len(erased) == 3 and erased[S.RAW].isna().all()
    kept = got[got[S.REASON] != S.ERASED]
    assert sorted(kept[S.REASON].fillna("good")) == sorted(["good", S.MALFORMED_LINE, S.MISSING_ITEM])
    assert kept[S.RAW].dropna().str.contains(f"{ERASED}x").sum() == 1


def files_naming(directory: Path, text: str) -> list[str]:
    """Files whose bytes contain `text`, and Parquet files with a value containing it (a
    compressed page might hide the bytes)."""
    found = []
    for path in directory.rglob("*"):
        if not path.is_file():
            continue
        if text.encode() in path.read_bytes():
            found.append(str(path))
        elif path.suffix == ".parquet" or path.name.startswith("part-"):
            try:
                table = pq.read_table(path)
            except Exception:
                continue
            if any(text in str(v) for col in table.columns for v in col.to_pylist()):
                found.append(str(path))
    return found


def test_an_erased_user_is_gone_from_every_file_after_the_next_night(spark, tmp_path):
    rows = [f"u{u},i{(u // 4) * 5 + (u + j) % 5},{1000 + 10 * j + u}" for u in range(12) for j in range(6)]
    rows += [f"{ERASED},i{j},{2000 + j}" for j in range(6)]
    rows += [f"{ERASED},i1,not-a-time"]  # quarantined on the first night, with the id in it
    log = write_csv(tmp_path / "in" / "log.csv", "user_id,item_id,ts", rows)
    deletion = write_csv(tmp_path / "in" / "erase.csv", "user_id,requested_at", [])
    opt_out = write_csv(tmp_path / "in" / "opt_out.csv", "user_id", [OPTED])
    root = tmp_path / "root"
    cfg = make_config(
        root, "input.format=csv", f"input.path={log}", "dataset=toy",
        "prepare.min_user_interactions=1", "prepare.min_item_interactions=1",
        "prepare.split.method=leave_last", "prepare.split.valid_n=1", "prepare.min_row_groups=2",
        "prepare.max_reject_share=0.1", "train.model=mf", "train.epochs=2", "train.batch_size=16",
        "train.dim=8", "train.per_model={}", "evaluate.ks=[5]", "evaluate.als.rank=4",
        "evaluate.als.max_iter=2", "score.top_n=3", "score.table=test.erasure", "score.gate.enabled=false",
        f"privacy.erase={{path: {deletion}, format: csv}}",
        f"privacy.opt_out={{path: {opt_out}, format: csv}}")
    run_nightly(spark, cfg, "2026-11-23")
    location = Path(spark.sql("DESCRIBE TABLE EXTENDED test.erasure").where("col_name = 'Location'")
                    .first()[1].replace("file:", ""))
    before = files_naming(root, ERASED) + files_naming(location, ERASED)
    assert any("/rejects/" in f for f in before) and any("user_index" in f for f in before)
    assert any(str(location) in f for f in before)  # the search finds the id where it is
    table = spark.table("test.erasure").where("ds = '2026-11-23'").toPandas()
    opted = table[table.user_id == OPTED]
    assert set(opted.source) == {"opted_out"} and set(opted.reason) == {"popular"}
    popular_list = table[table.source == "opted_out"].sort_values("rank").item_id.tolist()
    assert len(opted) == 3 and opted.sort_values("rank").item_id.tolist() == popular_list

    # The privacy team adds the user to the deletion list; the next night runs.
    (tmp_path / "in" / "erase.csv").write_text(f"user_id,requested_at\n{ERASED},2026-11-23\n")
    run_nightly(spark, cfg, "2026-11-24")
    assert files_naming(root, ERASED) == []
    assert files_naming(location, ERASED) == []
    runs = root / "runs" / "2026-11-24"
    prepared = json.loads((runs / "prepare.json").read_text())["counts"]["erasure"]
    assert prepared["listed_users"] == 1 and prepared["users_in_log"] == 1
    assert prepared["log_rows_removed"] == 7
    assert [Path(p).name for p in prepared["snapshots"]] == ["ds=2026-11-23"]
    assert len(prepared["artifacts"]) == 1 and not Path(prepared["artifacts"][0]).exists()
    scored = json.loads((runs / "score.json").read_text())["counts"]
    assert scored["erasure"] == {"partitions_rewritten": ["2026-11-23"], "rows_removed": 3}
    assert scored["users_by_source"]["opted_out"] == 1
    # The older partition is still there, without the user; the new one never had them.
    old = spark.table("test.erasure").where("ds = '2026-11-23'")
    assert old.count() == len(table) - 3 and old.where(F.col("user_id") == ERASED).count() == 0
    assert spark.table("test.erasure").where("ds = '2026-11-24'").count() == 12 * 3  # u0..u11
