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


def _beyond(gini: float, head: float) -> dict:
    out = {}
    for k in (10, 100):
        out.update({f"coverage@{k}": 1 - gini, f"gini@{k}": gini, f"top1pct_exposure@{k}": gini / 2,
                    f"novelty@{k}": 10 * (1 - gini), f"diversity@{k}": 0.5, f"slots@{k}": 860,
                    f"exposure_by_decile@{k}": [(1 - head) / 9] * 9 + [head]})
    return out


def _inputs():
    rng = np.random.default_rng(0)
    results = {
        "model": {"name": "mf", "version": "2026-11-25_<script>alert(1)</script>",
                  "metrics": _metrics(1.0), "beyond_accuracy": _beyond(0.61, 0.3)},
        "baselines": {"popularity": {"metrics": _metrics(0.5), "beyond_accuracy": _beyond(0.99, 0.9)},
                      "als": {"metrics": _metrics(0.8), "beyond_accuracy": _beyond(0.72, 0.4)},
                      "ease": {"skipped": SKIP_REASON}},
        "published": {"version": "2026-11-24_v<b>", "beyond_accuracy": _beyond(0.55, 0.2)},
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
                         "popularity.png", "exposure_by_decile.png"}
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


def test_report_has_the_beyond_accuracy_table_beside_the_published_model(tmp_path):
    results, history, scores, rec, cat = _inputs()
    written = write_report(str(tmp_path), "2026-11-25", results, history, scores, rec, cat)
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    section = page.split("<h2>Beyond accuracy</h2>")[1].split("<h2>")[0]
    header = re.findall(r"<th>(.*?)</th>", section)
    assert header == ["measure", "mf (model)", "popularity", "als",
                      "published model 2026-11-24_v&lt;b&gt;", "direction"]
    rows = {m.group(1): re.findall(r"<td>(.*?)</td>", m.group(2))
            for m in re.finditer(r"<tr><td>([^<]+)</td>(.*?)</tr>", section)}
    assert list(rows) == [f"{m}@{k}" for k in (10, 100) for m in
                          ("coverage", "gini", "top1pct_exposure", "novelty", "diversity")]
    assert rows["gini@10"][:4] == ["0.6100", "0.9900", "0.7200", "0.5500"]
    assert rows["novelty@100"][:4] == ["3.9000", "0.1000", "2.8000", "4.5000"]
    assert '<img src="exposure_by_decile.png"' in section  # the plot sits beside its table
    with open(written["exposure_by_decile.png"], "rb") as fh:
        assert fh.read(8) == PNG
