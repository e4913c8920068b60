"""The HTML report an operator reads after the nightly evaluation: a metrics table, a
beyond-accuracy table (exposure, novelty, diversity: `recsys/ranking/exposure.py`) and the plots.

Plots are drawn with matplotlib's object-oriented API (`matplotlib.figure.Figure`, rendered by
Agg on save), so no pyplot state or global backend is touched. Files go through `recsys.fsio`,
so `out_dir` may be a local path or a URI. Nothing here reads or writes the evaluation JSON.
"""
from __future__ import annotations

import html
import io
import math
import numbers

import numpy as np
from matplotlib.figure import Figure  # the OO API: no pyplot, no global backend switch
from matplotlib.ticker import MaxNLocator

from recsys import fsio

# Preferred row order within a K; other metrics follow alphabetically.
_ORDER = ("ndcg", "recall", "precision", "map", "hit_rate", "coverage", "popularity_percentile")
# Rows where the lowest value is the best (less popularity bias); every other row: highest.
_LOWER_IS_BETTER = {"popularity_percentile"}
# The beyond-accuracy rows, in order, each with which way is the spread-out, long-tail one.
_BEYOND = {"coverage": "↑ more of the catalogue shown",
           "gini": "↓ exposure spread more evenly",
           "top1pct_exposure": "↓ less exposure on the top 1% of items",
           "novelty": "↑ less popular items (bits)",
           "diversity": "↑ more varied categories within a list"}


def _num(value) -> float | None:
    return float(value) if isinstance(value, numbers.Real) and math.isfinite(value) else None


def _nan(value) -> float:
    return np.nan if _num(value) is None else float(value)


def _at_keys(metrics: dict) -> list[tuple[str, int, str]]:
    """(metric, K, key) for every numeric 'metric@K' key, sorted by K then the preferred order."""
    parts = [(key.rpartition("@"), key, v) for key, v in metrics.items()]
    out = [(name, int(k), key) for (name, _, k), key, v in parts
           if name and k.isdigit() and isinstance(v, numbers.Real)]
    rank = {m: i for i, m in enumerate(_ORDER)}
    return sorted(out, key=lambda t: (t[1], rank.get(t[0], len(rank)), t[0]))


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _no_data(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_xticks([])
    ax.set_yticks([])


def _plot_training(history: list[dict]) -> Figure:
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_loss, ax_val = fig.subplots(1, 2)
    for ax in (ax_loss, ax_val):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    epochs = np.array([h.get("epoch", i) for i, h in enumerate(history)], dtype=float)
    loss = np.array([_nan(h.get("loss")) for h in history], dtype=float)
    if np.isfinite(loss).any():
        ax_loss.plot(epochs, loss, marker="o")
        ax_loss.set(xlabel="epoch", ylabel="mean training loss",
                    title="Training loss (objective, per epoch)")
    else:
        _no_data(ax_loss, "no training loss recorded")
    keys = sorted({k for h in history for k in h if k.startswith("valid_ndcg@")},
                  key=lambda k: (len(k), k))
    for key in keys:
        y = np.array([_nan(h.get(key)) for h in history], dtype=float)
        line, = ax_val.plot(epochs, y, marker="o", label=key.removeprefix("valid_"))
        if np.isfinite(y).any():
            best = int(np.nanargmax(y))
            ax_val.plot(epochs[best], y[best], "*", ms=14, color=line.get_color())
    if keys:
        ax_val.set(xlabel="epoch", ylabel="NDCG (0–1)",
                   title="Validation NDCG per epoch (★ best)")
        ax_val.legend()
    else:
        _no_data(ax_val, "no validation NDCG recorded")
    return fig


def _plot_metrics(columns: list[tuple[str, dict]]) -> Figure:
    """One panel per K: grouped bars of the [0, 1]-valued metrics, one bar per model/baseline."""
    rows = _at_keys(columns[0][1])
    ks = sorted({k for _, k, _ in rows}) or [0]
    fig = Figure(figsize=(max(6, 5 * len(ks)), 4.5), layout="constrained")
    axes = fig.subplots(1, len(ks), squeeze=False)[0]
    for ax, k in zip(axes, ks):
        keys = [(m, key) for m, kk, key in rows if kk == k
                and all(0 <= (_num(c.get(key)) or 0) <= 1 for _, c in columns)]
        if not keys:
            _no_data(ax, "no metrics in [0, 1]")
            continue
        x = np.arange(len(keys))
        width = 0.8 / len(columns)
        for j, (label, metrics) in enumerate(columns):
            vals = [_nan(metrics.get(key)) for _, key in keys]
            ax.bar(x + (j - (len(columns) - 1) / 2) * width, vals, width, label=label)
        ax.set_xticks(x, [m.replace("_", " ") for m, _ in keys], rotation=30, ha="right")
        ax.set(ylabel="metric value (0–1)", title=f"Metrics @{k} (mean over users)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize="small")
    return fig


def _plot_scores(score_sample: np.ndarray) -> Figure:
    ax = Figure(figsize=(7, 4), layout="constrained").subplots()
    s = np.asarray(score_sample, dtype=float).ravel()
    s = s[np.isfinite(s)]
    if s.size:
        ax.hist(s, bins=50, color="tab:blue", alpha=0.8)
        ax.axvline(np.median(s), color="black", ls="--", label=f"median {np.median(s):.3g}")
        ax.legend()
        ax.set(xlabel="model score (raw, unitless)", ylabel="recommendations (count)")
    else:
        _no_data(ax, "no scores")
    ax.set_title(f"Score distribution of top-K recommendations (n={s.size:,})")
    return ax.figure


def _plot_popularity(recommended: np.ndarray, catalogue: np.ndarray) -> Figure:
    """CDFs (from 1,001 quantiles, so any array size is cheap to draw) on a symlog x-axis."""
    ax = Figure(figsize=(7, 4), layout="constrained").subplots()
    q = np.linspace(0, 1, 1001)
    drawn = False
    for label, arr in (("recommended (per slot)", recommended),
                       ("catalogue (per item)", catalogue)):
        a = np.asarray(arr, dtype=float).ravel()
        a = a[np.isfinite(a)]
        if a.size:
            qs = np.quantile(a, q)
            ax.step(qs, q, where="post", label=f"{label}: median {qs[500]:,.0f}, n={a.size:,}")
            drawn = True
    if drawn:
        ax.set_xscale("symlog", linthresh=1)
        ax.set(xlabel="item popularity (training interactions, log scale)",
               ylabel="cumulative share")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize="small")
    else:
        _no_data(ax, "no popularity data")
    ax.set_title("Popularity of recommended vs catalogue items (CDF)")
    return ax.figure


def _fmt(value) -> str:
    if isinstance(value, numbers.Integral):
        return f"{value:,}"
    v = _num(value)
    return "—" if v is None else f"{v:.4f}"


def _table(columns: list[tuple[str, dict]]) -> str:
    """Rows: the model's @K metrics; the best value per row (ties included) in bold."""
    esc = html.escape
    head = "".join(f"<th>{esc(str(label))}</th>" for label, _ in columns)
    out = [f"<table><thead><tr><th>metric</th>{head}</tr></thead><tbody>"]
    for name, _, key in _at_keys(columns[0][1]):
        vals = [_num(m.get(key)) for _, m in columns]
        present = [v for v in vals if v is not None]
        best = (min if name in _LOWER_IS_BETTER else max)(present) if present else None
        arrow = " ↓" if name in _LOWER_IS_BETTER else ""
        cells = "".join(f"<td><b>{_fmt(m.get(key))}</b></td>" if v is not None and v == best
                        else f"<td>{_fmt(m.get(key))}</td>" for v, (_, m) in zip(vals, columns))
        out.append(f"<tr><td>{esc(key)}{arrow}</td>{cells}</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _beyond_columns(results: dict) -> list[tuple[str, dict]]:
    """(label, beyond-accuracy numbers) of the model, each baseline measured, and the
    published model (its own evaluation's numbers), where there are any."""
    model = results.get("model", {})
    out = [(f"{model.get('name', 'model')} (model)", model.get("beyond_accuracy"))]
    out += [(name, base.get("beyond_accuracy")) for name, base in results.get("baselines", {}).items()]
    published = results.get("published")
    if published:
        out.append((f"published model {published.get('version', '?')}", published.get("beyond_accuracy")))
    return [(label, numbers) for label, numbers in out if numbers]


def _cutoffs(keys) -> list[int]:
    """The Ks of the `name@K` keys, ascending."""
    return sorted({k for _, k, _ in _at_keys(dict.fromkeys(keys, 0))})


def _beyond_table(columns: list[tuple[str, dict]]) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(label)}</th>" for label, _ in columns)
    out = [f"<table><thead><tr><th>measure</th>{head}<th>direction</th></tr></thead><tbody>"]
    keys = {key for _, numbers in columns for key in numbers}
    for k in _cutoffs(keys):
        for name, reads in _BEYOND.items():
            key = f"{name}@{k}"
            if key not in keys:
                continue
            cells = "".join(f"<td>{_fmt(numbers.get(key))}</td>" for _, numbers in columns)
            out.append(f"<tr><td>{esc(key)}</td>{cells}<td>{esc(reads)}</td></tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _plot_exposure(columns: list[tuple[str, dict]], k: int) -> Figure:
    """Grouped bars: the share of recommendation slots per item-popularity decile, per column."""
    ax = Figure(figsize=(10, 4.5), layout="constrained").subplots()
    key = f"exposure_by_decile@{k}"
    drawn = [(label, numbers[key]) for label, numbers in columns if numbers.get(key)]
    if drawn:
        x = np.arange(1, len(drawn[0][1]) + 1)
        width = 0.8 / len(drawn)
        for j, (label, shares) in enumerate(drawn):
            ax.bar(x + (j - (len(drawn) - 1) / 2) * width, [_nan(v) for v in shares], width, label=label)
        ax.axhline(1 / len(x), color="black", ls="--", lw=1, label="equal exposure")
        ax.set_xticks(x, [f"{i}" for i in x])
        ax.set(xlabel="item-popularity decile (1: least popular tenth of the catalogue, "
                      f"{len(x)}: most popular)", ylabel="share of recommendation slots")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize="small")
    else:
        _no_data(ax, "no exposure numbers")
    ax.set_title(f"Exposure by item-popularity decile (top {k})")
    return ax.figure


def _leaderboard_rows(board: list[dict]) -> tuple[str, list[dict]]:
    """(the metric the night chose by, the measured rows best first); skipped ones apart."""
    metric = next((k for r in board for k in r if k.startswith("ndcg@") and not k.endswith("_se")), "ndcg@10")
    measured = sorted((r for r in board if metric in r), key=lambda r: -r[metric])
    return metric, measured


def _leaderboard_table(board: list[dict]) -> str:
    esc = html.escape
    metric, measured = _leaderboard_rows(board)
    recall = metric.replace("ndcg", "recall")
    out = [f"<table><thead><tr><th>candidate</th><th>{esc(metric)} ± SE</th><th>{esc(recall)} ± SE</th>"
           "<th>train s</th><th>version</th></tr></thead><tbody>"]
    for r in measured:
        name = f"<b>{esc(r['name'])}</b> (published)" if r.get("winner") else esc(r["name"])
        out.append(f"<tr><td>{name}</td><td>{_fmt(r[metric])} ± {_fmt(r.get(metric + '_se'))}</td>"
                   f"<td>{_fmt(r.get(recall))} ± {_fmt(r.get(recall + '_se'))}</td>"
                   f"<td>{_fmt(r.get('train_s'))}</td><td><code>{esc(str(r.get('version', '')))}</code></td></tr>")
    for r in board:
        if "skipped" in r:
            out.append(f"<tr><td>{esc(r['name'])}</td><td colspan=\"4\">skipped: {esc(r['skipped'])}</td></tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _plot_leaderboard(board: list[dict]) -> Figure:
    metric, measured = _leaderboard_rows(board)
    fig = Figure(figsize=(10, 0.4 * len(measured) + 1.2), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(measured))[::-1]
    ax.barh(y, [r[metric] for r in measured], xerr=[r.get(metric + "_se", 0) for r in measured],
            color=["#2e7d32" if r.get("winner") else "#90a4ae" for r in measured])
    ax.set_yticks(y, [r["name"] for r in measured])
    ax.set_xlabel(f"validation {metric} (± standard error)")
    return fig


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:1em 0}thead{background:#f2f2f2}
th,td{border:1px solid #ccc;padding:4px 10px;text-align:right}
th:first-child,td:first-child{text-align:left}
.pass,.fail{color:#fff;padding:2px 6px}.pass{background:#2e7d32}.fail{background:#c62828}
figure{margin:2em 0}img{max-width:100%;border:1px solid #eee}figcaption{color:#555}"""

_CAPTIONS = {
    "training_curves.png": "Training loss and validation NDCG per epoch.",
    "metrics.png": "Model against each evaluated baseline, one panel per cut-off K (metrics on a "
                   "0–1 scale; others, such as the popularity percentile, are in the table).",
    "score_distribution.png": "Distribution of the model's scores over its top-K recommendations.",
    "leaderboard.png": "The night's candidates and blends on the validation rows (green: published).",
    "popularity.png": "Cumulative distribution of item popularity: recommended slots against "
                      "the whole catalogue.",
    "exposure_by_decile.png": "Share of the recommendation slots that go to each tenth of the "
                              "catalogue by training popularity (the dashed line: every tenth "
                              "shown equally); the published model as its own evaluation measured it.",
}

_BEYOND_NOTE = (
    "Measured on the same lists as the metrics above. coverage: share of the catalogue in "
    "anyone's list; gini: Gini coefficient of the slots each catalogue item gets (0: every item "
    "equally, (n-1)/n: all on one; unrecommended items count as 0); top1pct_exposure: share of "
    "the slots on the 1% most shown items; novelty: mean -log2 of a recommended item's share of "
    "training interactions, in bits; diversity (where the items have a category column): mean "
    "cosine distance between the category sets of a list's pairs of items, with one category per "
    "item the share of pairs in different categories. The published model's column is from its "
    "own evaluation (the validation users of the night it was trained).")


def _figure(name: str) -> str:
    return (f'<figure><img src="{name}" alt="{name}"><figcaption>{html.escape(_CAPTIONS[name])}'
            "</figcaption></figure>")


def write_report(out_dir: str, ds: str, results: dict, history: list[dict],
                 score_sample: np.ndarray, recommended_popularity: np.ndarray,
                 catalogue_popularity: np.ndarray) -> dict[str, str]:
    """Write index.html and PNG plots into out_dir (a local path or URI: write files with
    recsys.fsio.write_bytes); return {name: path} of what was written.

    Keys are the file names ('metrics.png', ..., 'index.html'; the page last, once every image
    it links exists). Baselines with a 'skipped' reason are listed, not plotted. Where
    `results` carries beyond-accuracy numbers (each column's 'beyond_accuracy', the published
    model's under 'published'), their table and 'exposure_by_decile.png'.
    """
    esc = html.escape
    model = results.get("model", {})
    columns = [(f"{model.get('name', 'model')} (model)", model.get("metrics", {}))]
    skipped = []
    for name, base in results.get("baselines", {}).items():
        if "skipped" in base or "metrics" not in base:
            skipped.append((name, base.get("skipped", "no metrics")))
        else:
            columns.append((name, base["metrics"]))

    board = results.get("leaderboard") or []
    beyond = _beyond_columns(results)
    k = _cutoffs(beyond[0][1])[0] if beyond else None  # the plot: the first K, as the others
    figures = {**({"leaderboard.png": _plot_leaderboard(board)} if board else {}),
               "training_curves.png": _plot_training(history or []),
               "metrics.png": _plot_metrics(columns),
               **({"exposure_by_decile.png": _plot_exposure(beyond, k)} if k is not None else {}),
               "score_distribution.png": _plot_scores(score_sample),
               "popularity.png": _plot_popularity(recommended_popularity, catalogue_popularity)}
    written = {name: out_dir.rstrip("/") + "/" + name for name in [*figures, "index.html"]}
    for name, fig in figures.items():
        fsio.write_bytes(written[name], _png(fig))

    summary = (f"Model <b>{esc(str(model.get('name', '?')))}</b> version "
               f"<code>{esc(str(model.get('version', '?')))}</code> · "
               f"{esc(_fmt(model.get('metrics', {}).get('users')))} users evaluated")
    gate = results.get("gate")
    if gate is not None:
        ok = bool(gate.get("passed"))
        summary += (f" · gate <span class=\"{'pass' if ok else 'fail'}\">"
                    f"{'PASSED' if ok else 'FAILED'}</span> {esc(str(gate.get('message', '')))}")
    skip_html = "".join(f"<li><b>{esc(str(n))}</b>: {esc(str(r))}</li>" for n, r in skipped)
    exposure_fig = "exposure_by_decile.png"  # beside its table, not among the other plots
    figs = "\n".join(_figure(n) for n in figures if n != exposure_fig)
    beyond_html = (f"<h2>Beyond accuracy</h2>\n{_beyond_table(beyond)}\n<p>{esc(_BEYOND_NOTE)}</p>\n"
                   f"{_figure(exposure_fig)}" if beyond else "")
    title = esc(f"recsys evaluation — {ds}")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>{_CSS}</style></head>
<body><h1>{title}</h1>
<p>{summary}</p>
<h2>Metrics</h2>
{_table(columns)}
<p>Bold: the best value of the row (↓: lower is better, i.e. less popularity bias).</p>
{f"<h3>Skipped baselines</h3><ul>{skip_html}</ul>" if skipped else ""}
{beyond_html}
{f"<h2>Leaderboard</h2><p>How the night chose: every candidate and blend on the validation rows (first-fit weights), the metric the gate uses.</p>{_leaderboard_table(board)}" if board else ""}
<h2>Plots</h2>
{figs}
</body></html>
"""
    fsio.write_bytes(written["index.html"], page.encode("utf-8"))
    return written
