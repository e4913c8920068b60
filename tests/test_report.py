"""The evaluation report: files written, images linked, inputs escaped, best values in bold."""
from __future__ import annotations

import re

import numpy as np

from recsys.evaluation.report import write_report

PNG = b"\x89PNG\r\n\x1a\n"
SKIP_REASON = "catalogue of 50000 items is above evaluate.ease_max_items=20000"


def _metrics(scale: float, users: int = 86) -> dict:
    out = {"users": users}
    for k in (10, 100):
        for i, name in enumerate(("ndcg", "recall", "precision", "map", "hit_rate", "coverage")):
            out[f"{name}@{k}"] = round(scale * (0.1 + 0.1 * i) * (1.5 if k == 100 else 1.0), 4)
        out[f"popularity_percentile@{k}"] = round(100 * (1.2 - scale), 2)  # 0-100, lower is better
    return out


def _inputs():
    rng = np.random.default_rng(0)
    results = {
        "model": {"name": "mf", "version": "2026-11-25_<script>alert(1)</script>",
                  "metrics": _metrics(1.0)},
        "baselines": {"popularity": {"metrics": _metrics(0.5)},
                      "als": {"metrics": _metrics(0.8)},
                      "ease": {"skipped": SKIP_REASON}},
        "gate": {"passed": False, "message": "ndcg@10 < popularity & co"},
    }
    history = [{"epoch": e, "loss": 0.7 - 0.05 * e, "valid_ndcg@10": 0.1 + 0.01 * e,
                "samples_per_s": 1.8e5, "lr": 0.005} for e in range(5)]
    catalogue = rng.zipf(1.5, 2000).clip(max=10_000)
    recommended = rng.choice(catalogue, 86 * 10)
    catalogue[:50] = 0  # items without training interactions
    return results, history, rng.normal(size=860), recommended, catalogue


def test_report_files_links_escaping_and_bold(tmp_path):
    results, history, scores, rec, cat = _inputs()
    out = tmp_path / "report"
    written = write_report(str(out), "2026-11-25", results, history, scores, rec, cat)

    page = (out / "index.html").read_text(encoding="utf-8")
    assert written["index.html"].endswith("index.html")
    srcs = set(re.findall(r'<img src="([^"]+)"', page))
    pngs = {name: path for name, path in written.items() if name.endswith(".png")}
    assert set(pngs) == {"training_curves.png", "metrics.png", "score_distribution.png",
                         "popularity.png"}
    for name, path in pngs.items():
        with open(path, "rb") as fh:
            assert fh.read(8) == PNG, name
        assert name in srcs
    for src in srcs:
        assert (out / src).is_file(), src
    assert sorted(p.name for p in out.iterdir()) == sorted(written)  # nothing else, no temp files

    assert "recsys evaluation — 2026-11-25" in page
    assert "<script>" not in page
    assert "2026-11-25_&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "ndcg@10 &lt; popularity &amp; co" in page and "FAILED" in page
    assert SKIP_REASON in page

    rows = {m.group(1): m.group(2)
            for m in re.finditer(r"<tr><td>([^<]+?)(?: ↓)?</td>(.*?)</tr>", page)}
    cells = re.findall(r"<td>(.*?)</td>", rows["ndcg@10"])
    assert cells == ["<b>0.1000</b>", "0.0500", "0.0800"]  # model, popularity, als (no ease)
    cells = re.findall(r"<td>(.*?)</td>", rows["popularity_percentile@10"])
    assert cells == ["<b>20.0000</b>", "70.0000", "40.0000"]  # lower is better
    assert "ease" not in rows["ndcg@10"]


def test_report_copes_with_empty_inputs(tmp_path):
    results = {"model": {"name": "mf", "version": "v1", "metrics": {"ndcg@10": 0.2, "users": 3}},
               "baselines": {"popularity": {"skipped": "no data"}}}
    empty = np.array([])
    uri = "file://" + str(tmp_path)
    written = write_report(uri, "2026-11-25", results, [], empty, empty, empty)
    assert written["index.html"] == f"file://{tmp_path}/index.html"  # URIs go through fsio
    assert len(written) == 5
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "PASSED" not in page and "FAILED" not in page
    assert "<td><b>0.2000</b></td>" in page
