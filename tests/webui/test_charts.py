"""The server-drawn SVG charts: well-formed, escaped, CSP-clean, and to scale."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest

from webui import charts

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = '<b onmouseover="x()">&amp; "quoted"</b>'


def _parse(markup: str) -> ET.Element:
    root = ET.fromstring(str(markup))  # well-formed XML, or this raises
    assert root.tag == f"{SVG}svg"
    for element in root.iter():
        assert "style" not in element.attrib, element.tag
        assert not any(name.startswith("on") for name in element.attrib), element.tag
    assert root.find(f"{SVG}script") is None
    return root


def _texts(root: ET.Element, tag: str) -> list[str]:
    return [element.text or "" for element in root.iter(f"{SVG}{tag}")]


def test_a_line_chart_escapes_names_and_breaks_at_gaps() -> None:
    series = charts.Series(
        name=HOSTILE,
        points=[(0, 1), (1, 2), (2, 3), (10, 4), (11, 5)],
        tooltips=[f"{HOSTILE} {n}" for n in range(5)],
        marks=["", "", "", "", "live"],
    )
    root = _parse(
        charts.line_chart(
            chart_id="c<1>",
            title=HOSTILE,
            description="d",
            series=[series],
            x_ticks=[(0, "start"), (11, "end"), (99, "outside")],
            x_label="x",
            y_label="y",
            max_gap=2,
        )
    )
    assert root.get("id") == "c-1-"
    assert HOSTILE in _texts(root, "title")  # text, not markup: the parser saw no <b>
    assert root.find(f".//{SVG}b") is None
    path = root.find(f".//{SVG}path").get("d")  # type: ignore[union-attr]
    assert path.count("M") == 2  # the stretch from x=2 to x=10 is not drawn
    assert [c.get("class") for c in root.iter(f"{SVG}circle")][-1] == "dot live"
    labels = _texts(root, "text")
    assert "start" in labels and "end" in labels and "outside" not in labels


def test_a_dense_line_keeps_only_its_marked_dots() -> None:
    points = [(float(x), float(x % 7)) for x in range(charts.MAX_DOTS + 1)]
    marks = [""] * charts.MAX_DOTS + ["live"]
    root = _parse(
        charts.line_chart(
            chart_id="dense",
            title="t",
            description="d",
            series=[charts.Series("s", points, marks=marks)],
            x_ticks=[],
            x_label="x",
            y_label="y",
        )
    )
    assert [c.get("class") for c in root.iter(f"{SVG}circle")] == ["dot live"]


def test_stacked_columns_add_up_and_say_so_in_tooltips() -> None:
    root = _parse(
        charts.stacked_bar_chart(
            chart_id="stack",
            title="t",
            description="d",
            categories=["10:00", "11:00"],
            category_titles=["10-11", "11-12"],
            series=[("ann", [3, 0]), ("=bob", [1, 2])],
            x_label="hour",
            y_label="decisions",
            unit="decisions",
        )
    )
    bars = [r for r in root.iter(f"{SVG}rect") if "bar" in (r.get("class") or "")]
    assert len(bars) == 3  # no rectangle for a zero
    titles = _texts(root, "title")
    assert "10-11: 4 decisions (ann 3, =bob 1)" in titles
    assert "=bob, 11-12: 2 decisions" in titles
    heights = {r.find(f"{SVG}title").text: float(r.get("height")) for r in bars}  # type: ignore[union-attr,arg-type]
    assert heights["ann, 10-11: 3 decisions"] == pytest.approx(
        3 * heights["=bob, 10-11: 1 decisions"]
    )


def test_log_bars_put_zero_at_the_axis_and_space_decades_evenly() -> None:
    bars = [charts.Bar(f"c{n}", value, f"c{n}: {value}") for n, value in enumerate([1000, 10, 0])]
    root = _parse(
        charts.bar_chart(
            chart_id="tail", title="t", description="d", bars=bars, value_label="images", log=True
        )
    )
    widths = [
        float(r.get("width") or 0) for r in root.iter(f"{SVG}rect") if r.get("height") != "10"
    ]
    assert widths[2] == 0
    # log10(1 + v): 1000 sits about three times as far out as 10.
    assert widths[0] / widths[1] == pytest.approx(3.0 / 1.04, rel=0.01)
    assert "images (log scale)" in _texts(root, "text")


def test_many_bars_become_columns_by_rank() -> None:
    bars = [charts.Bar(f"class {n}", 500 - n, f"class {n}") for n in range(300)]
    root = _parse(
        charts.bar_chart(
            chart_id="many", title="t", description="d", bars=bars, value_label="images", log=True
        )
    )
    assert len(list(root.iter(f"{SVG}rect"))) == 300
    assert "class 0" not in _texts(root, "text")  # no row labels
    assert "#1 class 0" in _texts(root, "title")
    assert "classes by rank (most images first)" in _texts(root, "text")


def test_long_and_wide_names_are_shortened_for_labels() -> None:
    assert charts.shorten("Gyeongbokgung", 200) == "Gyeongbokgung"
    cut = charts.shorten("경복궁" * 20, 100)
    assert cut.endswith("…") and charts.text_width(cut) <= 100
    assert charts.text_width("경") == 2 * charts.text_width("g")


def test_ticks() -> None:
    assert charts.nice_ticks(7) == [0, 2, 4, 6, 8]
    assert charts.nice_ticks(1) == [0, 1]
    assert charts.nice_ticks(0) == [0, 1]
    assert charts.nice_ticks(1, whole=False) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert charts.log_ticks(12) == [0, 1, 2, 5, 10]
    assert charts.log_ticks(5000) == [0, 1, 10, 100, 1000]
    assert [charts.percent_format(v) for v in (0.6, 0.781, 1.0)] == ["60%", "78.1%", "100%"]


def test_time_ticks_fall_on_round_utc_times() -> None:
    start = datetime(2026, 11, 23, 22, 40, tzinfo=UTC)
    ticks = charts.time_ticks(start, start + timedelta(hours=5))
    assert [label for _, label in ticks] == [
        "Nov 23 23:00",
        "Nov 24 00:00",
        "01:00",
        "02:00",
        "03:00",
    ]
    week = charts.time_ticks(start, start + timedelta(days=7))
    assert [label for _, label in week][:2] == ["Nov 24", "Nov 25"]
    assert all(moment % 86400 == 0 for moment, _ in week)
