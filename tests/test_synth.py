"""Tests for recsys.synth: the synthetic log must carry exactly the rows and defects it claims.

The reference classifier below is deliberately independent of the generator: every line
must have at most one problem, and the problem counts must equal those in _synth.json.
"""
import json
import os
from collections import Counter
from datetime import datetime, timezone

import pytest

from recsys.synth import CORRUPT_KINDS, EVENT_TYPES, SynthSpec, generate

EVENTS = 20_000
END = int(datetime(2026, 11, 1, tzinfo=timezone.utc).timestamp())
START = END - 90 * 86400
Y2099 = int(datetime(2099, 1, 1, tzinfo=timezone.utc).timestamp())
HEADER = "user_id,item_id,event_type,ts,value"


def problems(user, item, event, ts, value):
    """Every problem a row has (empty list = clean); user/item None or '' means missing."""
    found = []
    if not user:
        found.append("missing_user")
    elif not (isinstance(user, str) and user[0] == "u" and user[1:].isdigit()):
        found.append("bad_user")
    if not item:
        found.append("missing_item")
    elif not (isinstance(item, str) and item[0] == "i" and item[1:].isdigit()):
        found.append("bad_item")
    if event not in EVENT_TYPES:
        found.append("unknown_event")
    try:
        t = int(ts)
        if isinstance(ts, str) and not ts.isdigit():
            raise ValueError(ts)
    except (TypeError, ValueError):
        found.append("bad_timestamp")
    else:
        if t >= Y2099:
            found.append("future_timestamp")
        elif not START <= t < END:
            found.append("timestamp_outside_window")
    if event == "rate" or value not in ("", None):
        try:
            v = int(value)
            if isinstance(value, str) and not value.isdigit():
                raise ValueError(value)
        except (TypeError, ValueError):
            found.append("bad_value")
        else:
            if not 1 <= v <= 5:
                found.append("value_out_of_range")
        if event != "rate":
            found.append("value_on_non_rate_event")
    return found


def csv_reason(line):
    fields = line.split(",")
    if len(fields) != 5:
        return ["malformed_line"]
    return problems(*fields)


def json_reason(line):
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return ["malformed_line"]
    assert list(row) == ["user_id", "item_id", "event_type", "ts", "value"]
    return problems(*row.values())


def read_lines(out, meta, header):
    lines = []
    for name in meta["files"]:
        with open(os.path.join(out, name)) as f:
            text = f.read().split("\n")
        assert text[-1] == ""  # every line, the last included, ends with a newline
        if header:
            assert text[0] == HEADER
            text = text[1:]
        lines += text[:-1]
    return lines


@pytest.fixture(scope="module")
def csv_log(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("csv"))
    meta = generate(SynthSpec(events=EVENTS, seed=7, chunk_rows=7_000), out)
    return out, meta, read_lines(out, meta, header=True)


def test_counts_match_metadata_and_files(csv_log):
    out, meta, lines = csv_log
    with open(os.path.join(out, "_synth.json")) as f:
        assert json.load(f) == meta
    assert meta["files"] == ["part-00000.csv", "part-00001.csv", "part-00002.csv"]
    assert sorted(os.listdir(out)) == sorted(meta["files"] + ["_synth.json"])
    assert meta["clean"] == EVENTS
    assert meta["rows"] == EVENTS + meta["duplicates"] + sum(meta["corrupt"].values()) == len(lines)
    assert meta["spec"]["users"] == EVENTS // 40 and meta["spec"]["items"] == 50


def test_each_row_has_at_most_one_problem_and_counts_are_exact(csv_log):
    _, meta, lines = csv_log
    reasons = [csv_reason(line) for line in lines]
    assert max(len(r) for r in reasons) == 1
    counts = Counter(r[0] if r else "clean" for r in reasons)
    assert counts.pop("clean") == EVENTS + meta["duplicates"]
    assert dict(counts) == meta["corrupt"]


def test_corruption_shares_and_mixing(csv_log):
    _, meta, lines = csv_log
    assert set(meta["corrupt"]) == set(CORRUPT_KINDS)
    total = sum(meta["corrupt"].values())
    assert total == pytest.approx(0.01 * meta["rows"], rel=0.05)
    assert meta["duplicates"] == pytest.approx(0.005 * meta["rows"], rel=0.05)
    for kind, n in meta["corrupt"].items():
        assert n == pytest.approx(total / len(CORRUPT_KINDS), abs=1), kind
    bad_at = [i for i, line in enumerate(lines) if csv_reason(line)]
    # scattered through the log, not appended as a block
    assert bad_at[0] < 0.05 * len(lines) and bad_at[-1] > 0.95 * len(lines)
    malformed = [line for line in lines if csv_reason(line) == ["malformed_line"]]
    assert malformed and all(len(line.split(",")) != 5 for line in malformed)
    assert any("%%%garbage%%%" in line for line in malformed)


def test_clean_rows_are_valid_and_realistic(csv_log):
    _, meta, lines = csv_log
    clean = [line.split(",") for line in lines if not csv_reason(line)]
    for user, item, event, ts, value in clean:
        assert START <= int(ts) < END
        assert event in EVENT_TYPES
        assert (1 <= int(value) <= 5) if event == "rate" else value == ""
    events = Counter(row[2] for row in clean)
    assert events.most_common(1)[0][0] == "view"
    assert events["purchase"] < events["click"] and events["purchase"] < 0.05 * len(clean)
    users = sorted(Counter(row[0] for row in clean).values(), reverse=True)
    assert sum(users[: len(users) // 10]) > 0.3 * len(clean)
    items = sorted(Counter(row[1] for row in clean).values(), reverse=True)
    assert sum(items[: len(items) // 10]) > 0.3 * len(clean)
    # popularity rank is shuffled, so the busiest user is not simply u0 or u1
    top_user = Counter(row[0] for row in clean).most_common(1)[0][0]
    assert top_user not in ("u0", "u1")
    hours = Counter(int(row[3]) // 3600 % 24 for row in clean)
    assert hours[20] > 1.5 * hours[8]  # daily cycle: evening peak


def test_duplicates_are_exact_copies(csv_log):
    _, meta, lines = csv_log
    clean = Counter(line for line in lines if not csv_reason(line))
    extra = sum(n - 1 for n in clean.values())
    assert meta["duplicates"] <= extra <= meta["duplicates"] + 5


def test_deterministic_per_seed(tmp_path):
    def run(seed, name):
        out = tmp_path / name
        meta = generate(SynthSpec(events=3_000, seed=seed, chunk_rows=1_000), str(out))
        return [(out / f).read_bytes() for f in meta["files"] + ["_synth.json"]]

    assert run(3, "a") == run(3, "b")
    assert run(3, "a")[:-1] != run(4, "c")[:-1]


def test_jsonl_format(tmp_path):
    meta = generate(SynthSpec(events=5_000, seed=1), str(tmp_path), fmt="jsonl")
    assert meta["files"] == ["part-00000.jsonl"]
    lines = read_lines(str(tmp_path), meta, header=False)
    assert len(lines) == meta["rows"]
    reasons = [json_reason(line) for line in lines]
    assert max(len(r) for r in reasons) == 1
    counts = Counter(r[0] if r else "clean" for r in reasons)
    assert counts.pop("clean") == 5_000 + meta["duplicates"]
    assert dict(counts) == meta["corrupt"]
    first_ok = next(json.loads(line) for line, r in zip(lines, reasons) if not r)
    assert isinstance(first_ok["ts"], int)
    assert any('"value":null}' in line for line in lines)


def test_rerun_replaces_old_parts(tmp_path):
    generate(SynthSpec(events=3_000, chunk_rows=1_000), str(tmp_path))
    meta = generate(SynthSpec(events=3_000), str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["_synth.json", "part-00000.csv"]
    assert meta["rows"] == len(read_lines(str(tmp_path), meta, header=True))


@pytest.mark.parametrize("spec, fmt", [
    (SynthSpec(events=-1), "csv"),
    (SynthSpec(events=10, corrupt_share=0.6, duplicate_share=0.5), "csv"),
    (SynthSpec(events=10, chunk_rows=0), "csv"),
    (SynthSpec(events=10), "parquet"),
])
def test_rejects_bad_arguments(tmp_path, spec, fmt):
    with pytest.raises(ValueError):
        generate(spec, str(tmp_path), fmt=fmt)
