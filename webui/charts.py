"""Charts drawn on the server as inline SVG.

No script and no ``style`` attributes, so they pass the app's strict
Content-Security-Policy, print, and need no JavaScript library. Colours and
fonts come from classes styled in ``static/dashboard.css``; every text is
escaped; every mark carries a ``<title>`` (the browser shows it as a
tooltip); each chart has a ``<title>`` and ``<desc>`` for screen readers, and
the page puts the same numbers in a table beside it.

The helpers take plain numbers and strings and return ``Markup``:

* ``line_chart``: one line per series over a numeric x axis (time, or an index).
* ``stacked_bar_chart``: one column per category, stacked by series.
* ``bar_chart``: horizontal labelled bars, on a linear or a log scale; with many
  bars, unlabelled columns by rank (the shape of a long tail).
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from markupsafe import Markup, escape

WIDTH = 760
PALETTE_SIZE = 10  # classes s0 .. s9 in dashboard.css
FONT_PX = 12
LEFT, RIGHT, BOTTOM = 64, 16, 44
LEGEND_ROW = 18
MAX_DOTS = 60  # per series; beyond that the line alone (its dots would crowd it)
MAX_LABELLED_BARS = 60
BAR_ROW = 20
BAR_LABEL_WIDTH = 190

Number = int | float
Formatter = Callable[[float], str]


def count_format(value: float) -> str:
    return f"{value:,.0f}"


def percent_format(value: float) -> str:
    shown = round(value * 100, 1)
    return f"{shown:.0f}%" if shown == round(shown) else f"{shown:.1f}%"


# --- text -------------------------------------------------------------------------------


def text_width(text: str) -> float:
    """Rough width in pixels at FONT_PX: wide (CJK) characters count double."""
    units = sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)
    return units * FONT_PX * 0.6


def shorten(text: str, max_px: float) -> str:
    """``text`` cut with an ellipsis to fit ``max_px`` (the full text goes in a tooltip)."""
    if text_width(text) <= max_px:
        return text
    kept = ""
    for char in text:
        if text_width(kept + char + "…") > max_px:
            break
        kept += char
    return kept + "…"


def _num(value: float) -> str:
    """A coordinate: short, and never in exponent notation."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _text(x: float, y: float, content: str, css: str, *, anchor: str = "start") -> str:
    return (
        f'<text x="{_num(x)}" y="{_num(y)}" class="{css}" text-anchor="{anchor}">'
        f"{escape(content)}</text>"
    )


def _title(content: str) -> str:
    return f"<title>{escape(content)}</title>"


# --- scales -----------------------------------------------------------------------------


def nice_ticks(top: float, *, count: int = 5, whole: bool = True) -> list[float]:
    """Round tick values from 0 to at least ``top``, about ``count`` steps (of at least 1
    when ``whole``: counts have no fractions)."""
    if top <= 0 or not math.isfinite(top):
        return [0.0, 1.0]
    raw = top / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    if whole:
        step = max(1.0, math.ceil(step))
    steps = math.ceil(top / step - 1e-9)
    return [round(step * k, 10) for k in range(steps + 1)]


def log_ticks(top: float) -> list[float]:
    """0, then 1, 10, 100, ... up to ``top``; with 1-2-5 steps when that is under three decades."""
    decades = math.log10(max(top, 1.0))
    steps = (1, 2, 5) if decades < 3 else (1,)
    ticks = [0.0]
    power = 1.0
    while power <= top or len(ticks) == 1:
        ticks += [m * power for m in steps if m * power <= max(top, 1.0)]
        power *= 10
    return ticks


@dataclass(frozen=True)
class Scale:
    """Maps values in [0, top] onto [start, end] pixels; ``log``: by log10(1 + value),
    so that a zero sits at the axis and 1, 10, 100 are evenly spaced."""

    top: float
    start: float
    end: float
    log: bool = False

    def _t(self, value: float) -> float:
        return math.log10(1 + max(value, 0.0)) if self.log else value

    def __call__(self, value: float) -> float:
        span = self._t(self.top) or 1.0
        return self.start + (self.end - self.start) * self._t(value) / span


TIME_STEPS = [
    timedelta(minutes=15),
    timedelta(minutes=30),
    timedelta(hours=1),
    timedelta(hours=2),
    timedelta(hours=3),
    timedelta(hours=6),
    timedelta(hours=12),
    timedelta(days=1),
    timedelta(days=2),
    timedelta(days=7),
]


def time_ticks(start: datetime, end: datetime, *, most: int = 8) -> list[tuple[float, str]]:
    """Ticks (Unix seconds, label) on round UTC times between ``start`` and ``end``.

    A tick at midnight, or the first one, names the day; others show the time.
    """
    span = max((end - start).total_seconds(), 1.0)
    step = next(
        (s for s in TIME_STEPS if span / s.total_seconds() <= most - 1), TIME_STEPS[-1]
    ).total_seconds()
    first = math.ceil(start.timestamp() / step) * step
    ticks: list[tuple[float, str]] = []
    moment = first
    while moment <= end.timestamp() + 1e-6:
        when = datetime.fromtimestamp(moment, UTC)
        if step >= 86400 or (when.hour == 0 and when.minute == 0) or not ticks:
            label = (
                f"{when:%b} {when.day}" if step >= 86400 else f"{when:%b} {when.day} {when:%H:%M}"
            )
        else:
            label = f"{when:%H:%M}"
        ticks.append((moment, label))
        moment += step
    return ticks


# --- the frame ----------------------------------------------------------------------------


def _legend(names: Sequence[str], classes: Sequence[str]) -> tuple[list[str], float]:
    """Swatches and names, wrapped to the chart's width; returns (marks, height)."""
    parts: list[str] = []
    x, y = float(LEFT), 14.0
    for name, css in zip(names, classes, strict=True):
        shown = shorten(name, 180)
        width = 14 + text_width(shown) + 16
        if x + width > WIDTH - RIGHT and x > LEFT:
            x, y = float(LEFT), y + LEGEND_ROW
        parts.append(
            f'<g class="legend-item">{_title(name)}'
            f'<rect x="{_num(x)}" y="{_num(y - 9)}" width="10" height="10" class="swatch {css}"/>'
            f"{_text(x + 14, y, shown, 'legend')}</g>"
        )
        x += width
    return parts, (y + 10 if parts else 0.0)


def _svg(chart_id: str, title: str, description: str, height: float, body: list[str]) -> Markup:
    safe_id = "".join(c if (c.isascii() and c.isalnum()) or c in "-_" else "-" for c in chart_id)
    # Every text above went through escape() and every number through _num().
    return Markup(  # noqa: S704
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{safe_id}"'
        f' viewBox="0 0 {WIDTH} {_num(height)}" role="img"'
        f' aria-labelledby="{safe_id}-title {safe_id}-desc">'
        f'<title id="{safe_id}-title">{escape(title)}</title>'
        f'<desc id="{safe_id}-desc">{escape(description)}</desc>' + "".join(body) + "</svg>"
    )


def _y_axis(
    scale: Scale, ticks: Sequence[float], fmt: Formatter, label: str, plot_top: float
) -> list[str]:
    parts = ['<g class="grid">']
    for tick in ticks:
        y = scale(tick)
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{_num(y)}" y2="{_num(y)}"/>')
    parts.append("</g>")
    parts += [_text(LEFT - 6, scale(tick) + 4, fmt(tick), "tick", anchor="end") for tick in ticks]
    middle = (plot_top + scale.start) / 2
    parts.append(
        f'<text class="axis-label" text-anchor="middle" transform="translate(14 {_num(middle)})'
        f' rotate(-90)">{escape(label)}</text>'
    )
    return parts


def _x_label(label: str, height: float) -> str:
    return _text((LEFT + WIDTH - RIGHT) / 2, height - 6, label, "axis-label", anchor="middle")


def series_class(k: int) -> str:
    return f"s{k % PALETTE_SIZE}"


# --- line chart --------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    """One line. ``points`` are (x, y); ``tooltips`` one per point; ``marks`` one css
    class per point ("" for none): a marked point is always drawn (a live value, the
    champion), even where the line has too many points for dots."""

    name: str
    points: Sequence[tuple[float, float]]
    tooltips: Sequence[str] = ()
    marks: Sequence[str] = ()
    css: str = ""


def line_chart(
    *,
    chart_id: str,
    title: str,
    description: str,
    series: Sequence[Series],
    x_ticks: Sequence[tuple[float, str]],
    x_label: str,
    y_label: str,
    x_range: tuple[float, float] | None = None,
    y_top: float | None = None,
    y_format: Formatter = count_format,
    whole: bool = True,
    max_gap: float | None = None,
    height: float = 300,
) -> Markup:
    """Lines over a numeric x axis; a gap longer than ``max_gap`` breaks the line
    (a stretch with no measurement is not drawn as a straight trend)."""
    classes = [s.css or series_class(k) for k, s in enumerate(series)]
    legend, legend_height = _legend([s.name for s in series], classes)
    plot_top = legend_height + 12
    xs = [x for s in series for x, _ in s.points] or [0.0, 1.0]
    low, high = x_range or (min(xs), max(xs))
    if high <= low:
        low, high = low - 1, high + 1
    ys = [y for s in series for _, y in s.points]
    ticks = nice_ticks(y_top if y_top is not None else max(ys, default=0.0), whole=whole)
    y_scale = Scale(ticks[-1], height - BOTTOM, plot_top)
    x_scale = Scale(high - low, LEFT + 8, WIDTH - RIGHT - 8)

    def px(x: float) -> float:
        return x_scale(x - low)

    body = _y_axis(y_scale, ticks, y_format, y_label, plot_top) + legend
    body.append('<g class="x-axis">')
    body.append(
        f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}"'
        f' y1="{_num(height - BOTTOM)}" y2="{_num(height - BOTTOM)}"/>'
    )
    for x, label in x_ticks:
        if low <= x <= high:
            body.append(_text(px(x), height - BOTTOM + 16, label, "tick", anchor="middle"))
    body.append("</g>")
    body.append(_x_label(x_label, height))
    for k, line in enumerate(series):
        css = classes[k]
        path: list[str] = []
        previous: float | None = None
        for x, y in line.points:
            gap = previous is not None and max_gap is not None and x - previous > max_gap
            path.append(
                ("M" if previous is None or gap else "L") + f"{_num(px(x))} {_num(y_scale(y))}"
            )
            previous = x
        body.append(f'<g class="series {css}">{_title(line.name)}')
        if len(line.points) > 1:
            body.append(f'<path class="line" d="{" ".join(path)}"/>')
        dense = len(line.points) > MAX_DOTS
        for n, (x, y) in enumerate(line.points):
            mark = line.marks[n] if n < len(line.marks) else ""
            if dense and not mark:
                continue
            tip = line.tooltips[n] if n < len(line.tooltips) else f"{line.name}: {y_format(y)}"
            radius = 4.5 if mark else 3
            body.append(
                f'<circle class="dot {escape(mark)}" cx="{_num(px(x))}" cy="{_num(y_scale(y))}"'
                f' r="{radius}">{_title(tip)}</circle>'
            )
        body.append("</g>")
    return _svg(chart_id, title, description, height, body)


# --- stacked columns -----------------------------------------------------------------------


def stacked_bar_chart(
    *,
    chart_id: str,
    title: str,
    description: str,
    categories: Sequence[str],
    category_titles: Sequence[str],
    series: Sequence[tuple[str, Sequence[int]]],
    x_label: str,
    y_label: str,
    unit: str = "",
    height: float = 300,
) -> Markup:
    """One column per category, stacked by series in the order given (first at the bottom).

    ``categories`` are the short tick labels (thinned out to fit), and
    ``category_titles`` the full names used in tooltips.
    """
    classes = [series_class(k) for k in range(len(series))]
    legend, legend_height = _legend([name for name, _ in series], classes)
    plot_top = legend_height + 12
    n = max(len(categories), 1)
    totals = [sum(values[i] for _, values in series) for i in range(len(categories))]
    ticks = nice_ticks(max(totals, default=0))
    y_scale = Scale(ticks[-1], height - BOTTOM, plot_top)
    slot = (WIDTH - RIGHT - LEFT) / n
    bar = max(slot * 0.8, 1.0)
    every = max(1, math.ceil(n / 12))
    body = _y_axis(y_scale, ticks, count_format, y_label, plot_top) + legend
    body.append(
        f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}"'
        f' y1="{_num(height - BOTTOM)}" y2="{_num(height - BOTTOM)}"/>'
    )
    suffix = f" {unit}" if unit else ""
    for i, category in enumerate(categories):
        x = LEFT + slot * i + (slot - bar) / 2
        if i % every == 0:
            body.append(_text(x + bar / 2, height - BOTTOM + 16, category, "tick", anchor="middle"))
        parts = [f"{name} {values[i]:,}" for name, values in series if values[i]]
        summary = f"{category_titles[i]}: {totals[i]:,}{suffix}"
        if len(parts) > 1:
            summary += " (" + ", ".join(parts) + ")"
        body.append(f'<g class="column">{_title(summary)}')
        base = 0
        for k, (name, values) in enumerate(series):
            value = values[i]
            if not value:
                continue
            y0, y1 = y_scale(base), y_scale(base + value)
            body.append(
                f'<rect class="bar {classes[k]}" x="{_num(x)}" y="{_num(y1)}"'
                f' width="{_num(bar)}" height="{_num(max(y0 - y1, 0.5))}">'
                f"{_title(f'{name}, {category_titles[i]}: {value:,}{suffix}')}</rect>"
            )
            base += value
        body.append("</g>")
    body.append(_x_label(x_label, height))
    return _svg(chart_id, title, description, height, body)


# --- bars: the long tail --------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    label: str
    value: int
    tooltip: str
    css: str = ""  # a status, say: styled in dashboard.css


def bar_chart(
    *,
    chart_id: str,
    title: str,
    description: str,
    bars: Sequence[Bar],
    value_label: str,
    log: bool = False,
    legend: Sequence[tuple[str, str]] = (),
) -> Markup:
    """Horizontal bars, one labelled row each, in the order given; past
    ``MAX_LABELLED_BARS``, unlabelled columns by rank instead. ``legend``: (name, css)."""
    if len(bars) > MAX_LABELLED_BARS:
        return _rank_chart(
            chart_id=chart_id,
            title=title,
            description=description,
            bars=bars,
            value_label=value_label,
            log=log,
            legend=legend,
        )
    legend_parts, legend_height = _legend([n for n, _ in legend], [c for _, c in legend])
    top = legend_height + 30
    height = top + BAR_ROW * max(len(bars), 1) + 36
    left = LEFT + BAR_LABEL_WIDTH - 64
    top_value = max((b.value for b in bars), default=0)
    ticks = log_ticks(top_value) if log else nice_ticks(top_value)
    scale = Scale(max(ticks[-1], top_value), left, WIDTH - RIGHT - 48, log=log)
    body = [*legend_parts, '<g class="grid">']
    for tick in ticks:
        x = scale(tick)
        body.append(
            f'<line x1="{_num(x)}" x2="{_num(x)}" y1="{top - 6}" y2="{_num(height - 30)}"/>'
        )
    body.append("</g>")
    body += [_text(scale(t), top - 10, count_format(t), "tick", anchor="middle") for t in ticks]
    for i, item in enumerate(bars):
        y = top + BAR_ROW * i
        width = scale(item.value) - left
        body.append(f'<g class="row">{_title(item.tooltip)}')
        body.append(
            _text(
                left - 8, y + BAR_ROW * 0.68, shorten(item.label, left - 16), "label", anchor="end"
            )
        )
        body.append(
            f'<rect class="bar {escape(item.css)}" x="{left}" y="{_num(y + 3)}"'
            f' width="{_num(max(width, 0.0))}" height="{BAR_ROW - 6}"/>'
        )
        body.append(_text(left + width + 5, y + BAR_ROW * 0.68, f"{item.value:,}", "value"))
        body.append("</g>")
    scale_note = " (log scale)" if log else ""
    body.append(
        _text(
            (left + WIDTH - RIGHT) / 2,
            height - 8,
            value_label + scale_note,
            "axis-label",
            anchor="middle",
        )
    )
    return _svg(chart_id, title, description, height, body)


def _rank_chart(
    *,
    chart_id: str,
    title: str,
    description: str,
    bars: Sequence[Bar],
    value_label: str,
    log: bool,
    legend: Sequence[tuple[str, str]],
) -> Markup:
    """Columns by rank (largest first), for more classes than rows fit: the tail's shape."""
    legend_parts, legend_height = _legend([n for n, _ in legend], [c for _, c in legend])
    plot_top = legend_height + 12
    height = 320.0
    top_value = max((b.value for b in bars), default=0)
    ticks = log_ticks(top_value) if log else nice_ticks(top_value)
    y_scale = Scale(max(ticks[-1], top_value), height - BOTTOM, plot_top, log=log)
    body = _y_axis(y_scale, ticks, count_format, value_label + (" (log)" if log else ""), plot_top)
    body += legend_parts
    slot = (WIDTH - RIGHT - LEFT) / len(bars)
    for i, item in enumerate(bars):
        y = y_scale(item.value)
        body.append(
            f'<rect class="bar {escape(item.css)}" x="{_num(LEFT + slot * i)}" y="{_num(y)}"'
            f' width="{_num(max(slot - 0.5, 0.5))}" height="{_num(max(height - BOTTOM - y, 0.0))}">'
            f"{_title(f'#{i + 1} {item.tooltip}')}</rect>"
        )
    for rank in sorted({1, *range(0, len(bars) + 1, max(1, _round_step(len(bars))))} - {0}):
        x = LEFT + slot * (rank - 0.5)
        body.append(_text(x, height - BOTTOM + 16, f"{rank:,}", "tick", anchor="middle"))
    body.append(_x_label("classes by rank (most images first)", height))
    return _svg(chart_id, title, description, height, body)


def _round_step(n: int) -> int:
    return int(nice_ticks(float(n), count=6)[1]) or 1
