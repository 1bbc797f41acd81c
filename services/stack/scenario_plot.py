"""The plot of the drift scenario (`recsys demo --scenario drift`): CTR per variant and drift share over time.

Two panels share the x axis (seconds since the scenario's traffic started): the top one draws the CTR of every
variant (a line each, its 95% interval as a band when given, the points sized by impressions, the simulator's own
CTR dotted when given), the bottom one the share of drifted columns per drift window (drifted windows highlighted,
the threshold dashed). Every marker ("tastes shift", "drift detected", "promoted", ...) is a labelled vertical
dashed line on both panels. `write_timeline_plot` writes a PNG (matplotlib, Agg, no pyplot) and a self-contained
HTML (plotly, plotly.js inline so it opens offline). The timeline round-trips through JSON
(`Timeline.to_dict` / `timeline_from_dict`), so a saved timeline.json can be re-plotted:

    python -m recsys.stack.scenario_plot timeline.json OUT_DIR
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PNG_SIZE_PX = (1400, 800)
_DPI = 100

# Variant colours in order of first appearance (colour-blind friendly "tab10" order, control first).
_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
# Marker colours by label; an unknown label is grey.
_MARKER_COLORS = {
    "tastes shift": "#6a3d9a",
    "drift detected": "#d62728",
    "ctr drop": "#e6550d",
    "retrain started": "#b8860b",
    "canary started": "#1f77b4",
    "promoted": "#2ca02c",
    "rolled back": "#7f0000",
}
_MARKER_DEFAULT = "#555555"
_DRIFTED = "#d62728"
_NOT_DRIFTED = "#9ecae1"


@dataclass
class CtrPoint:
    """The CTR of one variant over one sampling interval."""

    t_s: float
    variant: str
    ctr: float
    impressions: int
    low: float | None = None
    high: float | None = None


@dataclass
class DriftPoint:
    """One drift window: the share of drifted columns and whether it was declared drifted."""

    t_s: float
    share: float
    drifted: bool


@dataclass
class Marker:
    """An event of the scenario at a point in time."""

    t_s: float
    label: str


@dataclass
class Timeline:
    """What the drift scenario sampled: CTR per variant, drift windows, events (and optionally the true CTR)."""

    ctr: list[CtrPoint]
    drift: list[DriftPoint]
    markers: list[Marker]
    ctr_truth: list[CtrPoint] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict that `timeline_from_dict` reads back."""
        return asdict(self)


def _opt_float(v: Any) -> float | None:
    """A float, or None for a missing value."""
    return None if v is None else float(v)


def _ctr_point(d: Any) -> CtrPoint:
    """A CtrPoint from its dict."""
    return CtrPoint(
        t_s=float(d["t_s"]),
        variant=str(d["variant"]),
        ctr=float(d["ctr"]),
        impressions=int(d["impressions"]),
        low=_opt_float(d.get("low")),
        high=_opt_float(d.get("high")),
    )


def _list(d: dict[str, Any], key: str) -> list[Any]:
    """The list at `key` (empty when absent); ValueError when it is not a list."""
    v = d.get(key) or []
    if not isinstance(v, list):
        raise ValueError(f"timeline: {key!r} must be a list, got {type(v).__name__}")
    return v


def timeline_from_dict(d: dict[str, Any]) -> Timeline:
    """The Timeline of `Timeline.to_dict()` (missing lists are empty); ValueError on a malformed dict."""
    if not isinstance(d, dict):
        raise ValueError(f"timeline: expected an object, got {type(d).__name__}")
    try:
        return Timeline(
            ctr=[_ctr_point(p) for p in _list(d, "ctr")],
            drift=[
                DriftPoint(t_s=float(p["t_s"]), share=float(p["share"]), drifted=bool(p["drifted"]))
                for p in _list(d, "drift")
            ],
            markers=[Marker(t_s=float(p["t_s"]), label=str(p["label"])) for p in _list(d, "markers")],
            ctr_truth=[_ctr_point(p) for p in _list(d, "ctr_truth")],
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"timeline: malformed point ({type(e).__name__}: {e})") from e


# ---------------------------------------------------------------------------------------------------------------
# Shared preparation


def _by_variant(points: Sequence[CtrPoint]) -> dict[str, list[CtrPoint]]:
    """Points per variant, each sorted by time, variants in order of first appearance."""
    out: dict[str, list[CtrPoint]] = {}
    for p in sorted(points, key=lambda p: p.t_s):
        out.setdefault(p.variant, []).append(p)
    return out


def _variant_colors(timeline: Timeline) -> dict[str, str]:
    """A stable colour per variant: "control" first, then in order of first appearance."""
    names = list(_by_variant([*timeline.ctr, *timeline.ctr_truth]))
    if "control" in names:
        names.remove("control")
        names.insert(0, "control")
    return {n: _PALETTE[i % len(_PALETTE)] for i, n in enumerate(names)}


def _marker_color(label: str) -> str:
    """The colour of a marker's line and label."""
    return _MARKER_COLORS.get(label.strip().lower(), _MARKER_DEFAULT)


def _x_range(timeline: Timeline) -> tuple[float, float]:
    """The x range covering every point and marker (0..1 for an empty timeline)."""
    xs = [p.t_s for p in timeline.ctr] + [p.t_s for p in timeline.ctr_truth]
    xs += [p.t_s for p in timeline.drift] + [m.t_s for m in timeline.markers]
    if not xs:
        return 0.0, 1.0
    lo, hi = min(min(xs), 0.0), max(xs)
    if hi <= lo:
        hi = lo + 1.0
    pad = 0.02 * (hi - lo)
    return lo - pad, hi + pad


def _ctr_top(timeline: Timeline) -> float:
    """The top of the CTR axis: the highest CTR or interval, with headroom for the marker labels."""
    ys = [p.ctr for p in timeline.ctr] + [p.ctr for p in timeline.ctr_truth]
    ys += [p.high for p in timeline.ctr if p.high is not None]
    top = max((y for y in ys if math.isfinite(y)), default=0.0)
    return top * 1.45 if top > 0 else 0.1


def _bar_width(drift: Sequence[DriftPoint], x_span: float) -> float:
    """The width of a drift bar: 80% of the median spacing between windows."""
    ts = sorted({p.t_s for p in drift})
    gaps = sorted(b - a for a, b in zip(ts, ts[1:], strict=False) if b > a)
    if not gaps:
        return 0.02 * x_span
    return 0.8 * gaps[len(gaps) // 2]


def _size_scale(points: Sequence[CtrPoint], lo: float, hi: float) -> list[float]:
    """Marker sizes between lo and hi, proportional to the square root of the impressions."""
    top = max((p.impressions for p in points), default=0)
    if top <= 0:
        return [lo for _ in points]
    return [lo + (hi - lo) * math.sqrt(max(p.impressions, 0) / top) for p in points]


def _fmt_interval(p: CtrPoint) -> str:
    """The interval as text for hovers ("n/a" when not given)."""
    if p.low is None or p.high is None:
        return "n/a"
    return f"[{p.low:.4f}, {p.high:.4f}]"


# ---------------------------------------------------------------------------------------------------------------
# PNG (matplotlib)


def _write_png(timeline: Timeline, path: Path, title: str, drift_threshold: float) -> None:
    """Draw the two panels with matplotlib (Agg, no pyplot state) into `path`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.transforms import blended_transform_factory

    w, h = PNG_SIZE_PX
    fig = Figure(figsize=(w / _DPI, h / _DPI), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax_ctr, ax_drift = fig.subplots(2, 1, sharex=True, height_ratios=[2.2, 1])
    fig.suptitle(title, fontsize=15, fontweight="bold")
    x0, x1 = _x_range(timeline)
    colors = _variant_colors(timeline)

    # Top: CTR per variant.
    for variant, pts in _by_variant(timeline.ctr).items():
        c = colors[variant]
        xs = [p.t_s for p in pts]
        ax_ctr.plot(xs, [p.ctr for p in pts], color=c, lw=2.0, label=variant, zorder=3)
        ax_ctr.scatter(xs, [p.ctr for p in pts], s=_size_scale(pts, 8, 70), color=c, alpha=0.8, zorder=4, lw=0)
        if any(p.low is not None and p.high is not None for p in pts):
            lows = [math.nan if p.low is None or p.high is None else p.low for p in pts]
            highs = [math.nan if p.low is None or p.high is None else p.high for p in pts]
            ax_ctr.fill_between(xs, lows, highs, color=c, alpha=0.18, lw=0, zorder=2)
    truth = _by_variant(timeline.ctr_truth)
    for variant, pts in truth.items():
        ax_ctr.plot(
            [p.t_s for p in pts], [p.ctr for p in pts], color=colors[variant], lw=1.4, ls=":", alpha=0.9, zorder=3
        )
    ax_ctr.set_ylim(0, _ctr_top(timeline))
    ax_ctr.set_ylabel("CTR (clicks / impressions)", fontsize=12)
    ax_ctr.grid(True, alpha=0.3)
    handles, labels = ax_ctr.get_legend_handles_labels()
    if truth:
        handles.append(Line2D([], [], color="#444444", lw=1.4, ls=":"))
        labels.append("simulator's true CTR")
    if handles:
        ax_ctr.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=11, title="variant")
    else:
        ax_ctr.text(0.5, 0.5, "no CTR samples yet", transform=ax_ctr.transAxes, ha="center", va="center",
                    fontsize=13, color="#777777")

    # Bottom: drift share per window.
    if timeline.drift:
        width = _bar_width(timeline.drift, x1 - x0)
        ax_drift.bar(
            [p.t_s for p in timeline.drift],
            [p.share for p in timeline.drift],
            width=width,
            color=[_DRIFTED if p.drifted else _NOT_DRIFTED for p in timeline.drift],
            edgecolor="white",
            linewidth=0.5,
            zorder=3,
        )
    else:
        ax_drift.text(0.5, 0.75, "no drift windows yet", transform=ax_drift.transAxes, ha="center", va="center",
                      fontsize=13, color="#777777")
    ax_drift.axhline(drift_threshold, color="#333333", ls="--", lw=1.3, zorder=4)
    ax_drift.set_ylim(0, 1.05)
    ax_drift.set_ylabel("drifted columns\n(share per window)", fontsize=12)
    ax_drift.set_xlabel("seconds since traffic started", fontsize=12)
    ax_drift.grid(True, axis="y", alpha=0.3)
    ax_drift.legend(
        [Patch(color=_DRIFTED), Patch(color=_NOT_DRIFTED), Line2D([], [], color="#333333", ls="--", lw=1.3)],
        ["drifted window", "window not drifted", f"threshold {drift_threshold:g}"],
        loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=11,
    )

    # Markers: a dashed line on both panels, the label at the top of the CTR panel (nudged apart when close).
    ax_ctr.set_xlim(x0, x1)
    min_gap = (x1 - x0) * 0.014  # about one label height
    last_x = -math.inf
    trans = blended_transform_factory(ax_ctr.transData, ax_ctr.transAxes)
    for m in sorted(timeline.markers, key=lambda m: m.t_s):
        c = _marker_color(m.label)
        for ax in (ax_ctr, ax_drift):
            ax.axvline(m.t_s, color=c, ls="--", lw=1.3, alpha=0.9, zorder=5)
        x_text = max(m.t_s, last_x + min_gap)
        last_x = x_text
        ax_ctr.text(x_text, 0.985, f" {m.label}", transform=trans, rotation=90, ha="right", va="top", fontsize=11,
                    color=c, fontweight="bold", zorder=6,
                    bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.75})
    for ax in (ax_ctr, ax_drift):
        ax.tick_params(labelsize=11)
    fig.savefig(path, dpi=_DPI, facecolor="white")


# ---------------------------------------------------------------------------------------------------------------
# HTML (plotly)


def _rgba(hex_color: str, alpha: float) -> str:
    """A '#rrggbb' colour as a CSS rgba() with the given alpha."""
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _write_html(timeline: Timeline, path: Path, title: str, drift_threshold: float) -> None:
    """Draw the two panels with plotly into a self-contained HTML file (plotly.js inline)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, row_heights=[0.68, 0.32], vertical_spacing=0.06,
        subplot_titles=("CTR per variant", "drifted columns per drift window"),
    )
    colors = _variant_colors(timeline)
    for variant, pts in _by_variant(timeline.ctr).items():
        c = colors[variant]
        # The interval as one filled polygon per run of points that carry it (None separates the runs).
        bx: list[float | None] = []
        by: list[float | None] = []
        run: list[CtrPoint] = []
        for p in [*pts, None]:
            if p is not None and p.low is not None and p.high is not None:
                run.append(p)
                continue
            if run:
                bx += [q.t_s for q in run] + [q.t_s for q in reversed(run)] + [None]
                by += [q.high for q in run] + [q.low for q in reversed(run)] + [None]  # type: ignore[misc]
                run = []
        if bx:
            fig.add_trace(
                go.Scatter(x=bx, y=by, fill="toself", fillcolor=_rgba(c, 0.18), line={"width": 0}, mode="lines",
                           name=f"{variant} 95% interval", legendgroup=variant, showlegend=False, hoverinfo="skip"),
                row=1, col=1,
            )
        fig.add_trace(
            go.Scatter(
                x=[p.t_s for p in pts], y=[p.ctr for p in pts], mode="lines+markers", name=variant,
                legendgroup=variant, line={"color": c, "width": 2},
                marker={"size": _size_scale(pts, 4, 14), "color": c},
                customdata=[[p.impressions, _fmt_interval(p)] for p in pts],
                hovertemplate=(f"<b>{variant}</b><br>t=%{{x:.0f}} s<br>CTR=%{{y:.4f}}<br>"
                               "impressions=%{customdata[0]}<br>95% interval=%{customdata[1]}<extra></extra>"),
            ),
            row=1, col=1,
        )
    for variant, pts in _by_variant(timeline.ctr_truth).items():
        fig.add_trace(
            go.Scatter(
                x=[p.t_s for p in pts], y=[p.ctr for p in pts], mode="lines", name=f"{variant} (true CTR)",
                legendgroup=variant, line={"color": colors[variant], "width": 1.5, "dash": "dot"},
                customdata=[[p.impressions] for p in pts],
                hovertemplate=(f"<b>{variant}</b> true CTR<br>t=%{{x:.0f}} s<br>CTR=%{{y:.4f}}<br>"
                               "impressions=%{customdata[0]}<extra></extra>"),
            ),
            row=1, col=1,
        )
    if timeline.drift:
        fig.add_trace(
            go.Bar(
                x=[p.t_s for p in timeline.drift], y=[p.share for p in timeline.drift], name="drift share",
                marker={"color": [_DRIFTED if p.drifted else _NOT_DRIFTED for p in timeline.drift]},
                customdata=[["drifted" if p.drifted else "not drifted"] for p in timeline.drift],
                hovertemplate="t=%{x:.0f} s<br>drifted share=%{y:.2f}<br>%{customdata[0]}<extra></extra>",
            ),
            row=2, col=1,
        )
    fig.add_shape(type="line", xref="x2 domain", yref="y2", x0=0, x1=1, y0=drift_threshold, y1=drift_threshold,
                  line={"color": "#333333", "dash": "dash", "width": 1.3})
    fig.add_annotation(xref="x2 domain", yref="y2", x=1, y=drift_threshold, text=f"threshold {drift_threshold:g}",
                       showarrow=False, xanchor="right", yanchor="bottom", font={"size": 11})
    for m in sorted(timeline.markers, key=lambda m: m.t_s):
        c = _marker_color(m.label)
        for yref in ("y domain", "y2 domain"):
            xref = "x" if yref == "y domain" else "x2"
            fig.add_shape(type="line", xref=xref, yref=yref, x0=m.t_s, x1=m.t_s, y0=0, y1=1,
                          line={"color": c, "dash": "dash", "width": 1.3})
        fig.add_annotation(xref="x", yref="y domain", x=m.t_s, y=1, text=m.label, showarrow=False, textangle=-90,
                           xanchor="right", yanchor="top", font={"color": c, "size": 12},
                           bgcolor="rgba(255,255,255,0.7)")
    x0, x1 = _x_range(timeline)
    fig.update_xaxes(range=[x0, x1])
    fig.update_xaxes(title_text="seconds since traffic started", row=2, col=1)
    fig.update_yaxes(title_text="CTR", range=[0, _ctr_top(timeline)], row=1, col=1)
    fig.update_yaxes(title_text="drifted share", range=[0, 1.05], row=2, col=1)
    fig.update_layout(title=title, template="plotly_white", width=PNG_SIZE_PX[0], height=PNG_SIZE_PX[1],
                      hovermode="closest", legend={"title": {"text": "variant"}}, bargap=0.2)
    fig.write_html(str(path), include_plotlyjs=True, full_html=True)


# ---------------------------------------------------------------------------------------------------------------


def write_timeline_plot(
    timeline: Timeline, out_dir: Path, title: str = "recsys drift scenario", drift_threshold: float = 0.5
) -> tuple[Path, Path]:
    """Write <out_dir>/scenario.png (matplotlib, Agg) and <out_dir>/scenario.html (plotly, offline); return both."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png, html = out_dir / "scenario.png", out_dir / "scenario.html"
    _write_png(timeline, png, title, drift_threshold)
    _write_html(timeline, html, title, drift_threshold)
    return png, html


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m recsys.stack.scenario_plot timeline.json OUT_DIR`: re-plot a saved timeline (2 on a bad file)."""
    parser = argparse.ArgumentParser(prog="python -m recsys.stack.scenario_plot", description=main.__doc__)
    parser.add_argument("timeline", type=Path, help="timeline.json written by the drift scenario")
    parser.add_argument("out_dir", type=Path, help="where scenario.png and scenario.html go")
    parser.add_argument("--title", default="recsys drift scenario")
    parser.add_argument("--drift-threshold", type=float, default=0.5)
    args = parser.parse_args(argv)
    try:
        timeline = timeline_from_dict(json.loads(args.timeline.read_text(encoding="utf-8")))
    except OSError as e:
        print(f"error: cannot read {args.timeline}: {e.strerror or e}", file=sys.stderr)
        return 2
    except (ValueError, UnicodeDecodeError) as e:
        print(f"error: {args.timeline} is not a valid timeline: {e}", file=sys.stderr)
        return 2
    png, html = write_timeline_plot(timeline, args.out_dir, title=args.title, drift_threshold=args.drift_threshold)
    print(png)
    print(html)
    return 0


if __name__ == "__main__":
    sys.exit(main())
