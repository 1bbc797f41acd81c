"""Evaluation report: metrics.json plus a self-contained report.html with inline SVG plots
(metric-by-K curves, ranker score distributions, calibration). No plotting library needed.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
W, H, PAD = 460, 300, 48
STYLE = ("body{font-family:sans-serif;margin:24px} table{border-collapse:collapse;font-size:12px}\n"
         "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right} svg{margin:8px;border:1px solid #eee}")


def _axes(title: str, x_label: str, y_label: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
        f'<text x="{W / 2}" y="16" text-anchor="middle" font-size="13">{html.escape(title)}</text>',
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - 10}" y2="{H - PAD}" stroke="#000"/>',
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{PAD}" y2="24" stroke="#000"/>',
        f'<text x="{W / 2}" y="{H - 10}" text-anchor="middle">{html.escape(x_label)}</text>',
        f'<text x="12" y="{H / 2}" transform="rotate(-90 12 {H / 2})" text-anchor="middle">'
        f"{html.escape(y_label)}</text>",
    ]


def _scale(lo: float, hi: float, a: float, b: float):
    span = (hi - lo) or 1.0
    return lambda v: a + (v - lo) / span * (b - a)


def line_chart(title: str, series: dict[str, list[tuple[float, float]]], x_label: str, y_label: str,
               log_x: bool = False) -> str:
    """SVG line chart of named (x, y) series."""
    pts = [p for s in series.values() for p in s]
    if not pts:
        return ""
    tx = (lambda v: math.log10(v)) if log_x else (lambda v: v)
    xs = [tx(x) for x, _ in pts]
    ymax = max(y for _, y in pts) * 1.05 or 1.0
    sx = _scale(min(xs), max(xs), PAD, W - 110)
    sy = _scale(0.0, ymax, H - PAD, 28)
    out = _axes(title, x_label, y_label)
    for x in sorted({x for x, _ in pts}):
        out.append(f'<text x="{sx(tx(x)):.1f}" y="{H - PAD + 14}" text-anchor="middle">{x:g}</text>')
    for i in range(5):
        v = ymax * i / 4
        out.append(f'<text x="{PAD - 4}" y="{sy(v) + 4:.1f}" text-anchor="end">{v:.2f}</text>')
    for n, (name, s) in enumerate(series.items()):
        color = COLORS[n % len(COLORS)]
        path = " ".join(f"{sx(tx(x)):.1f},{sy(y):.1f}" for x, y in s)
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{path}"/>')
        out += [f'<circle cx="{sx(tx(x)):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{color}"/>' for x, y in s]
        out.append(f'<text x="{W - 105}" y="{34 + 14 * n}" fill="{color}">{html.escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def histogram(title: str, counts: dict[str, list[int]]) -> str:
    """SVG overlaid histograms over [0, 1] (each normalised to a density)."""
    out = _axes(title, "predicted probability", "share of examples")
    dens = {k: [c / max(sum(v), 1) for c in v] for k, v in counts.items()}
    ymax = max((max(v) for v in dens.values() if v), default=1.0) * 1.05 or 1.0
    sy = _scale(0.0, ymax, H - PAD, 28)
    for n, (name, d) in enumerate(dens.items()):
        color = COLORS[n % len(COLORS)]
        bw = (W - 110 - PAD) / max(len(d), 1)
        for i, v in enumerate(d):
            out.append(f'<rect x="{PAD + i * bw:.1f}" y="{sy(v):.1f}" width="{bw:.1f}" height="{H - PAD - sy(v):.1f}" '
                       f'fill="{color}" fill-opacity="0.45"/>')
        out.append(f'<text x="{W - 105}" y="{34 + 14 * n}" fill="{color}">{html.escape(name)}</text>')
    for i in range(6):
        x = PAD + i / 5 * (W - 110 - PAD)
        out.append(f'<text x="{x:.1f}" y="{H - PAD + 14}" text-anchor="middle">{i / 5:.1f}</text>')
    out.append("</svg>")
    return "\n".join(out)


def bar_chart(title: str, groups: dict[str, dict[str, float]], y_label: str = "value") -> str:
    """SVG grouped bars: one group per key of `groups`, one bar per series inside it (same colour per series)."""
    names = list(dict.fromkeys(s for bars in groups.values() for s in bars))
    values = [v for bars in groups.values() for v in bars.values() if math.isfinite(v)]
    if not names or not values:
        return ""
    out = _axes(title, "", y_label)
    sy = _scale(0.0, max(max(values), 0.0) * 1.1 or 1.0, H - PAD, 28)
    slot = (W - 110 - PAD) / len(groups)
    bw = slot * 0.8 / len(names)
    for g, (group, bars) in enumerate(groups.items()):
        x0 = PAD + g * slot + slot * 0.1
        for n, name in enumerate(names):
            v = bars.get(name, float("nan"))
            if math.isfinite(v):
                out.append(f'<rect x="{x0 + n * bw:.1f}" y="{sy(max(v, 0.0)):.1f}" width="{bw:.1f}" '
                           f'height="{H - PAD - sy(max(v, 0.0)):.1f}" fill="{COLORS[n % len(COLORS)]}"/>')
        out.append(f'<text x="{x0 + slot * 0.4:.1f}" y="{H - PAD + 14}" text-anchor="middle">'
                   f"{html.escape(group)}</text>")
    for n, name in enumerate(names):
        out.append(f'<text x="{W - 105}" y="{34 + 14 * n}" fill="{COLORS[n % len(COLORS)]}">{html.escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def calibration_chart(title: str, bins: dict[str, list[dict]]) -> str:
    series = {name: [(b["mean_prob"], b["rate"]) for b in bs] for name, bs in bins.items()}
    series["ideal"] = [(0.0, 0.0), (1.0, 1.0)]
    return line_chart(title, series, "mean predicted probability", "observed positive rate")


def html_table(title: str, rows: dict[str, dict], keys: list[str], first: str = "model") -> str:
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = "".join(
        f"<tr><td>{html.escape(name)}</td>"
        + "".join(f"<td>{r[k]:.4f}</td>" if isinstance(r.get(k), float) else f"<td>{r.get(k, '')}</td>"
                  for k in keys)
        + "</tr>"
        for name, r in rows.items()
    )
    return f"<h2>{html.escape(title)}</h2><table><tr><th>{html.escape(first)}</th>{head}</tr>{body}</table>"


def render_html(results: dict) -> str:
    ks = sorted({int(k.split("@")[1]) for r in results["retrieval"].values() for k in r if k.startswith("recall@")})
    curves = {}
    for metric in ("recall", "ndcg"):
        series = {name: [(k, r[f"{metric}@{k}"]) for k in ks if f"{metric}@{k}" in r]
                  for name, r in results["retrieval"].items()}
        series.update({f"two-stage {name}": [(k, r[f"{metric}@{k}"]) for k in ks if f"{metric}@{k}" in r]
                       for name, r in results["two_stage"].items()})
        curves[metric] = line_chart(f"{metric.upper()}@K", series, "K", metric, log_x=True)
    rep = results.get("report", {})
    hists = "".join(histogram(f"{name} scores", {"positives": h["positive"], "negatives": h["negative"]})
                    for name, h in rep.get("score_hist", {}).items())
    calib = calibration_chart("calibration", rep.get("calibration", {})) if rep.get("calibration") else ""
    retrieval_keys = [f"{m}@{k}" for m in ("recall", "ndcg") for k in ks] + ["hit_rate@20", "coverage@20", "mrr"]
    two_stage_keys = [f"{m}@{k}" for m in ("recall", "ndcg") for k in ks]
    ranking_keys = ["auc", "gauc", "auc_hard", "logloss", "f1", "f1_threshold", "n_examples"]
    timings = "".join(f"<li>{html.escape(str(k))}: {v}</li>" for k, v in results.get("timings", {}).items())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>recsys evaluation</title>
<style>{STYLE}</style>
</head><body><h1>Evaluation: {html.escape(str(results.get("dataset")))}
({html.escape(str(results.get("split")))} split)</h1>
<p>{results.get("n_users")} users, {results.get("n_items")} items, {results.get("n_train")} train /
{results.get("n_test")} test interactions, seed {results.get("seed")}.</p>
<div>{curves["recall"]}{curves["ndcg"]}</div>
<div>{hists}{calib}</div>
{html_table("Retrieval", results["retrieval"], retrieval_keys)}
{html_table("Two-stage (two-tower candidates re-ranked)", results["two_stage"], two_stage_keys)}
{html_table("Ranking (held-out examples)", results["ranking"], ranking_keys)}
<h2>Timings (s)</h2><ul>{timings}</ul></body></html>"""


def clean(value):
    """JSON-safe copy: NaN / inf -> None, numpy scalars -> Python numbers."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_report(results: dict, out_dir: str | Path) -> tuple[Path, Path]:
    """Write metrics.json (everything but plot data) and report.html; returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = {k: v for k, v in results.items() if k != "report"}
    json_path = out / "metrics.json"
    json_path.write_text(json.dumps(clean(metrics), indent=2))
    html_path = out / "report.html"
    html_path.write_text(render_html(results))
    return json_path, html_path
