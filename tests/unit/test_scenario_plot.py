"""The drift scenario's plot: PNG + offline HTML from a timeline, the JSON round trip and the CLI."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from PIL import Image

from recsys.stack.scenario_plot import (
    PNG_SIZE_PX,
    CtrPoint,
    DriftPoint,
    Marker,
    Timeline,
    main,
    timeline_from_dict,
    write_timeline_plot,
)

SHIFT_S, CANARY_S, PROMOTED_S, END_S = 300.0, 420.0, 510.0, 600.0


def _interval(ctr: float, n: int) -> tuple[float, float]:
    """The normal-approximation 95% interval of a CTR over n impressions."""
    half = 1.96 * math.sqrt(max(ctr * (1 - ctr), 1e-9) / max(n, 1))
    return max(ctr - half, 0.0), ctr + half


def synthetic_timeline(seed: int = 7) -> Timeline:
    """Control and dcn from the start, a canary from CANARY_S; tastes shift at SHIFT_S, CTR recovers after promotion."""
    rng = random.Random(seed)
    ctr: list[CtrPoint] = []
    truth: list[CtrPoint] = []
    t = 10.0
    while t <= END_S:
        base = {"control": 0.080, "dcn": 0.092}
        if t >= SHIFT_S:
            base = {"control": 0.052, "dcn": 0.058}
        if t >= CANARY_S:
            base["canary-v0003"] = 0.088
        for variant, p in base.items():
            n = 300 if variant == "canary-v0003" and t < PROMOTED_S else rng.randint(900, 1300)
            observed = min(max(rng.gauss(p, math.sqrt(p * (1 - p) / n)), 0.0), 1.0)
            low, high = _interval(observed, n)
            ctr.append(CtrPoint(t_s=t, variant=variant, ctr=observed, impressions=n, low=low, high=high))
            truth.append(CtrPoint(t_s=t, variant=variant, ctr=p, impressions=n))
        t += 10.0
    drift = [
        DriftPoint(t_s=w, share=share, drifted=share >= 0.5)
        for w in range(30, int(END_S) + 1, 30)
        for share in [0.05 + 0.05 * rng.random() if w < SHIFT_S + 30 or w > PROMOTED_S else 0.6 + 0.3 * rng.random()]
    ]
    markers = [
        Marker(SHIFT_S, "tastes shift"),
        Marker(SHIFT_S + 30, "drift detected"),
        Marker(SHIFT_S + 40, "CTR drop"),
        Marker(SHIFT_S + 50, "retrain started"),
        Marker(CANARY_S, "canary started"),
        Marker(PROMOTED_S, "promoted"),
    ]
    return Timeline(ctr=ctr, drift=drift, markers=markers, ctr_truth=truth)


def _check_png(path: Path) -> None:
    """A valid PNG of the expected size with several distinct colours (not blank)."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size == PNG_SIZE_PX
        colors = im.convert("RGB").getcolors(maxcolors=1_000_000)
    assert colors is not None and len(colors) > 10


def test_writes_png_and_offline_html(tmp_path: Path) -> None:
    timeline = synthetic_timeline()
    png, html = write_timeline_plot(timeline, tmp_path / "out", title="drift scenario test")
    assert png == tmp_path / "out" / "scenario.png" and html == tmp_path / "out" / "scenario.html"
    _check_png(png)
    with Image.open(png) as im:
        distinct = {c for _, c in im.convert("RGB").getcolors(maxcolors=1_000_000) or []}
    assert len(distinct) > 50  # lines, bands, bars, labels in several colours
    text = html.read_text(encoding="utf-8")
    for name in ("control", "dcn", "canary-v0003", "drift share", "tastes shift", "promoted", "drift scenario test"):
        assert name in text
    assert "impressions" in text  # the hover
    assert "plotly.js v" in text or "Plotly" in text
    assert len(text) > 1_000_000  # plotly.js inline: opens offline
    assert '<script src="https://cdn' not in text


def test_empty_timeline(tmp_path: Path) -> None:
    png, html = write_timeline_plot(Timeline(ctr=[], drift=[], markers=[]), tmp_path)
    with Image.open(png) as im:
        assert im.size == PNG_SIZE_PX
    assert "<html" in html.read_text(encoding="utf-8")


def test_partial_intervals_and_single_points(tmp_path: Path) -> None:
    timeline = Timeline(
        ctr=[
            CtrPoint(5, "control", 0.1, 100, 0.05, 0.15),
            CtrPoint(10, "control", 0.12, 0, None, None),
            CtrPoint(15, "control", 0.11, 50, 0.02, 0.2),
            CtrPoint(15, "canary-v0001", 0.2, 10),
        ],
        drift=[DriftPoint(12, 0.7, True)],
        markers=[Marker(12, "rolled back"), Marker(12, "something else")],
    )
    png, _ = write_timeline_plot(timeline, tmp_path, drift_threshold=0.3)
    _check_png(png)


def test_dict_round_trip() -> None:
    timeline = synthetic_timeline()
    d = json.loads(json.dumps(timeline.to_dict()))
    assert timeline_from_dict(d) == timeline
    assert timeline_from_dict({}) == Timeline(ctr=[], drift=[], markers=[])
    with pytest.raises(ValueError):
        timeline_from_dict({"ctr": [{"t_s": 1}]})
    with pytest.raises(ValueError):
        timeline_from_dict({"drift": "nope"})


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "missing.json"), str(tmp_path / "out")]) == 2
    assert "missing.json" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    assert main([str(bad), str(tmp_path / "out")]) == 2
    bad.write_text('{"markers": [{"t_s": "x"}]}', encoding="utf-8")
    assert main([str(bad), str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()
    good = tmp_path / "timeline.json"
    good.write_text(json.dumps(synthetic_timeline().to_dict()), encoding="utf-8")
    assert main([str(good), str(tmp_path / "out")]) == 0
    _check_png(tmp_path / "out" / "scenario.png")
    assert (tmp_path / "out" / "scenario.html").exists()
