"""The model pages' charts: training curves and the confusion matrix, as inline SVG.

Built on ``webui.charts`` (its frame, text and escaping helpers), so they
follow the same rules: no script, no ``style`` attribute (colours are
classes in ``static/models.css`` and ``static/dashboard.css``), a ``<title>``
on every mark and a title and description for screen readers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from markupsafe import Markup

from webui import charts
from webui.charts import _num, _svg, _text, _title

HEAT_LEVELS = 10  # classes heat-0 .. heat-9 in models.css
MAX_MATRIX_CLASSES = 40  # beyond that, the classes with the most test images
MATRIX_LABEL_WIDTH = 170.0
_CURVE_NAMES = {
    "loss": "train loss",
    "val_loss": "validation loss",
    "accuracy": "train accuracy",
    "val_accuracy": "validation accuracy",
}


def _loss_format(value: float) -> str:
    return f"{value:.2f}"


def curve_chart(
    curves: Mapping[str, Sequence[float]], *, kind: str, chart_id: str
) -> Markup | None:
    """Loss (``kind="loss"``) or accuracy (``kind="accuracy"``) per epoch, train and
    validation; None when training recorded no such curve."""
    names = [name for name in (kind, f"val_{kind}") if curves.get(name)]
    if not names:
        return None
    series = []
    for k, name in enumerate(names):
        values = [float(v) for v in curves[name] if math.isfinite(float(v))]
        label = _CURVE_NAMES.get(name, name)
        fmt = charts.percent_format if kind == "accuracy" else _loss_format
        series.append(
            charts.Series(
                name=label,
                points=[(float(epoch), v) for epoch, v in enumerate(values, start=1)],
                tooltips=[
                    f"{label}, epoch {epoch}: {fmt(v)}" for epoch, v in enumerate(values, start=1)
                ],
                css=charts.series_class(k),
            )
        )
    epochs = max(len(s.points) for s in series)
    step = max(1, int(charts.nice_ticks(float(epochs), count=8)[1]))
    x_ticks = [(float(e), str(e)) for e in sorted({1, *range(step, epochs + 1, step)})]
    if kind == "accuracy":
        return charts.line_chart(
            chart_id=chart_id,
            title="Accuracy per epoch",
            description=f"Train and validation accuracy over {epochs} epochs.",
            series=series,
            x_ticks=x_ticks,
            x_range=(1.0, float(max(epochs, 2))),
            x_label="epoch",
            y_label="accuracy",
            y_top=1.0,
            y_format=charts.percent_format,
            whole=False,
            height=260,
        )
    return charts.line_chart(
        chart_id=chart_id,
        title="Loss per epoch",
        description=(
            f"Train and validation loss (sparse categorical cross-entropy) over {epochs} epochs."
        ),
        series=series,
        x_ticks=x_ticks,
        x_range=(1.0, float(max(epochs, 2))),
        x_label="epoch",
        y_label="loss",
        y_format=_loss_format,
        whole=False,
        height=260,
    )


def shown_classes(counts: Sequence[Sequence[int]], limit: int = MAX_MATRIX_CLASSES) -> list[int]:
    """Indices of the rows shown: all of them, or the ``limit`` with the most test images."""
    n = len(counts)
    if n <= limit:
        return list(range(n))
    support = [sum(row) for row in counts]
    return sorted(sorted(range(n), key=lambda i: (-support[i], i))[:limit])


def confusion_heatmap(
    counts: Sequence[Sequence[int]], labels: Sequence[str], *, chart_id: str
) -> Markup:
    """The confusion matrix (row: true class, column: predicted) as a heatmap.

    A cell's colour is its share of the row (the recall of the diagonal), in
    ``HEAT_LEVELS`` steps; the count is written in cells large enough for it.
    With more than ``MAX_MATRIX_CLASSES`` classes, only the classes with the
    most test images are drawn (the rest of the row is left out).
    """
    keep = shown_classes(counts)
    n = max(len(keep), 1)
    plot = charts.WIDTH - MATRIX_LABEL_WIDTH - charts.RIGHT
    cell = min(plot / n, 48.0)
    top = 40.0
    left = MATRIX_LABEL_WIDTH
    height = top + cell * n + 40
    body: list[str] = [
        _text(left + cell * n / 2, 16, "predicted class →", "axis-label", anchor="middle"),
        _text(8, top - 8, "true class ↓", "axis-label"),
    ]
    for row_pos, i in enumerate(keep):
        y = top + row_pos * cell
        label = charts.shorten(labels[i], MATRIX_LABEL_WIDTH - 12)
        body.append(
            f'<g class="row-label">{_title(labels[i])}'
            f"{_text(left - 6, y + cell / 2 + 4, label, 'tick', anchor='end')}</g>"
        )
    for col_pos, j in enumerate(keep):
        x = left + col_pos * cell + cell / 2
        if cell >= 14:
            short = charts.shorten(labels[j], 70)
            body.append(
                f'<g class="col-label">{_title(labels[j])}<text class="tick" text-anchor="start"'
                f' transform="translate({_num(x + 4)} {_num(top + cell * n + 8)}) rotate(40)">'
                f"{Markup.escape(short)}</text></g>"
            )
    for row_pos, i in enumerate(keep):
        total = sum(counts[i])
        for col_pos, j in enumerate(keep):
            value = int(counts[i][j])
            share = value / total if total else 0.0
            level = min(HEAT_LEVELS - 1, math.ceil(share * (HEAT_LEVELS - 1))) if value else 0
            x, y = left + col_pos * cell, top + row_pos * cell
            css = f"heat heat-{level}" + (" diagonal" if i == j else "")
            tip = (
                f"true {labels[i]}, predicted {labels[j]}: {value:,}"
                f" of {total:,} ({share * 100:.1f}% of the row)"
            )
            body.append(
                f'<rect class="{css}" x="{_num(x)}" y="{_num(y)}" width="{_num(cell - 1)}"'
                f' height="{_num(cell - 1)}">{_title(tip)}</rect>'
            )
            if value and cell >= 20:
                ink = "cell-count dark" if level >= 6 else "cell-count"
                body.append(_text(x + cell / 2, y + cell / 2 + 4, str(value), ink, anchor="middle"))
    note = "" if len(keep) == len(counts) else f" (the {len(keep)} with most test images)"
    return _svg(
        chart_id,
        "Confusion matrix",
        f"Test images by true class (rows) and predicted class (columns), {len(counts)}"
        f" classes{note}; the darker a cell, the larger its share of the row.",
        height + (60 if cell >= 14 else 0),
        body,
    )
