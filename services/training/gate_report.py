"""The retrain report: gate.json (the whole record) and a self-contained gate.html (champion and challenger side
by side, the gated metrics' deltas, the decision and its reason, a bar chart), in the style of `report.py`."""

from __future__ import annotations

import html
import json
from pathlib import Path

from recsys.training.report import STYLE, bar_chart, clean, html_table

SIDES = ("champion", "challenger")
GATED_KEYS = ["champion", "challenger", "delta", "relative", "tolerance", "verdict"]
DETAIL_KEYS = ["auc", "gauc", "auc_hard", "logloss", "f1", "positive_rate", "n_examples"]


def _gated_rows(deltas: dict) -> dict[str, dict]:
    rows = {}
    for name, d in deltas.items():
        verdict = d.get("skipped") or ("worse beyond tolerance" if d.get("worse") else "ok")
        rows[name] = {"champion": d.get("champion"), "challenger": d.get("challenger"), "delta": d.get("delta"),
                      "relative": d.get("relative"), "tolerance": d.get("tolerance"), "verdict": verdict}
    return rows


def _side_rows(record: dict, k: int) -> dict[str, dict]:
    rows = {}
    for side in SIDES:
        m = record["metrics"].get(side)
        if m:
            retrieval = m.get("retrieval", {})
            rows[f"{side} {record.get(side) or ''}".strip()] = {
                **{key: m.get(key) for key in (f"recall@{k}", f"ndcg@{k}", f"hit_rate@{k}", "auc", "logloss")},
                f"two-tower recall@{k}": retrieval.get(f"recall@{k}"), "ranker": m.get("ranker"),
            }
    return rows


def _ranker_rows(record: dict) -> dict[str, dict]:
    return {f"{side} {name}": r for side in SIDES for name, r in (record["metrics"].get(side) or {}).get(
        "rankers", {}).items()}


def render_html(record: dict) -> str:
    """The report page of one retrain record (what `write_gate_report` writes as JSON)."""
    k = record["policy"]["k"]
    gated = record["decision"]["deltas"]
    chart = bar_chart("gated metrics", {n: {s: d[s] for s in SIDES if isinstance(d.get(s), float)}
                                        for n, d in gated.items()})
    sides = _side_rows(record, k)
    colour = "#2ca02c" if record["decision"]["passed"] else "#d62728"
    window = record["window"]
    side_keys = list(next(iter(sides.values()), {}).keys())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>recsys retrain {html.escape(record["version"])}
</title><style>{STYLE}</style></head><body>
<h1>Retrain {html.escape(record["version"])}: <span style="color:{colour}">{html.escape(record["decision"]["decision"])}
</span></h1>
<p>{html.escape(record["decision"]["reason"])}</p>
<p>Champion {html.escape(str(record.get("champion")))}; action: {html.escape(str(record.get("action")))}.
Held-out window {window["held_out"]["since"]} to {window["held_out"]["until"]} (epoch s):
{window["held_out"]["n_interactions"]} interactions; {record["measured"].get("users")} users measured
({record["measured"].get("cold_users")} without history skipped), {record["measured"].get("examples")} ranking
examples, K = {k}, {record["measured"].get("candidates")} candidates.</p>
<div>{chart}</div>
{html_table("Gated metrics", _gated_rows(gated), GATED_KEYS, first="metric")}
{html_table("Two-stage and default ranker", sides, side_keys)}
{html_table("Every ranker on the shared examples", _ranker_rows(record), DETAIL_KEYS)}
{_ope_section(record.get("ope"))}
</body></html>"""


OPE_KEYS = ("ctr", "low", "high", "se")


def _ope_section(ope: dict | None) -> str:
    """Off-policy estimates (reported beside the gated metrics, not gated)."""
    if not ope:
        return ""
    if "error" in ope:
        return f"<h2>Off-policy estimates</h2><p>not available: {html.escape(str(ope['error']))}</p>"
    rows = {f"{side} {name}": {key: e.get(key) for key in OPE_KEYS}
            for side, estimates in ope.get("versions", {}).items() for name, e in estimates.items()}
    logged = ", ".join(f"{v} {r['ctr']:.4f}" for v, r in ope.get("logged", {}).items())
    note = (f"<p>{ope.get('lists', 0)} logged lists of the window ({ope.get('exploring_lists', 0)} exploring); "
            f"CTR they really got: {html.escape(logged)}. Not gated.</p>")
    return html_table("Off-policy estimates of CTR (re-ranking the logged pools)", rows, OPE_KEYS) + note


def write_gate_report(record: dict, out_dir: str | Path) -> tuple[Path, Path]:
    """Write gate.json and gate.html into `out_dir`; returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out / "gate.json", out / "gate.html"
    json_path.write_text(json.dumps(clean(record), indent=2))
    html_path.write_text(render_html(record))
    return json_path, html_path
