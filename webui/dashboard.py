"""The dashboard: the queue by reason over time, decisions per reviewer per hour,
images per class (the long tail) and the models' accuracy.

Each chart is SVG drawn here (``webui.charts``; the CSP allows no inline
script or style), with its numbers in a table beside it and a CSV download at
``/dashboard/<name>.csv``. Thin: parse the query, read in one short session,
shape for display.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, abort, current_app, jsonify, render_template, request
from flask.typing import ResponseReturnValue
from markupsafe import Markup
from sqlalchemy.orm import Session

from curation import dashboard
from curation.dashboard import (
    AccuracyHistory,
    DecisionActivity,
    LongTail,
    QueueHistory,
)
from curation.exceptions import RejectedInput
from curation.models import ClassStatus
from webui import charts, runtime_of
from webui.auth import login_required

blueprint = Blueprint("dashboard", __name__)

# Spreadsheets run a cell that starts with one of these as a formula (the
# full-width forms too, in some locales); class names and usernames are user
# input, so such a cell is written with a leading apostrophe.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")
_WHOLE = re.compile(r"\s*\d{1,6}\s*")
# The page's table of the queue chart stops here; the CSV has every row.
QUEUE_TABLE_ROWS = 200


def _now() -> datetime:
    return datetime.now(UTC)


def _whole_param(name: str, default: int, high: int) -> int:
    """A whole-number query parameter; the domain checks its range."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not _WHOLE.fullmatch(raw):
        raise RejectedInput(f"{name} must be a whole number from 1 to {high}, not {raw!r}")
    return int(raw)


def _hours() -> int:
    return _whole_param("hours", dashboard.DEFAULT_HOURS, dashboard.MAX_HOURS)


def _days() -> int:
    return _whole_param("days", dashboard.DEFAULT_DAYS, dashboard.MAX_DAYS)


@blueprint.errorhandler(RejectedInput)
def _bad_parameter(error: RejectedInput) -> ResponseReturnValue:
    if request.accept_mimetypes.best == "application/json":
        return jsonify({"error": {"code": "RejectedInput", "message": str(error)}}), 400
    page = render_template("error.html", status=400, code="Bad Request", message=str(error))
    return page, 400


def _session() -> Session:
    return runtime_of(current_app).factory()


# --- display helpers -----------------------------------------------------------------------


def stamp(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def percent(share: float | None) -> str:
    return "" if share is None else f"{share * 100:.1f}%"


STATUS_LEGEND = [
    (status.value, f"status-{status.value}")
    for status in (ClassStatus.ACTIVE, ClassStatus.PROPOSED, ClassStatus.RETIRED)
]
METRIC_NAMES = {
    "test_accuracy": "test split",
    "accuracy": "accuracy",
    "cross_validated_accuracy": "cross-validated",
    "test_top5_accuracy": "test split",
    "top5_accuracy": "top-5",
    "top_5_accuracy": "top-5",
}


# --- the charts -----------------------------------------------------------------------------


def queue_chart(history: QueueHistory) -> Markup:
    shown = [
        reason
        for reason in history.reasons
        if any(p.counts.pending for p in history.points if p.reason == reason)
    ]
    series = []
    for k, reason in enumerate(history.reasons):
        if reason not in shown:
            continue
        points = [p for p in history.points if p.reason == reason]
        series.append(
            charts.Series(
                name=reason,
                points=[(p.taken_at.timestamp(), float(p.counts.pending)) for p in points],
                tooltips=[
                    f"{reason}, {'now (live)' if p.live else stamp(p.taken_at)}:"
                    f" {p.counts.pending:,} pending"
                    for p in points
                ],
                marks=["live" if p.live else "" for p in points],
                css=charts.series_class(k),
            )
        )
    every = dashboard.SNAPSHOT_EVERY.total_seconds()
    return charts.line_chart(
        chart_id="chart-queue",
        title="Queue size by reason over time",
        description=(
            f"Pending items per reason, every {every / 60:.0f} minutes from"
            f" {stamp(history.start)} to now; the last point of each line is the live count."
            " Reasons with no pending item in the window are left out."
        ),
        series=series,
        x_ticks=charts.time_ticks(history.start, history.now),
        x_range=(history.start.timestamp(), history.now.timestamp()),
        x_label="time (UTC)",
        y_label="pending items",
        max_gap=2.5 * every,
    )


def decisions_chart(activity: DecisionActivity) -> Markup:
    table = activity.per_reviewer()
    labels = [
        f"{hour:%b} {hour.day}" if hour.hour == 0 or k == 0 else f"{hour:%H}:00"
        for k, hour in enumerate(activity.hours)
    ]
    titles = [
        f"{hour:%b} {hour.day}, {hour:%H}:00-{(hour.hour + 1):02d}:00 UTC"
        for hour in activity.hours
    ]
    return charts.stacked_bar_chart(
        chart_id="chart-decisions",
        title="Decisions per reviewer per hour",
        description=(
            f"Decisions in each of the last {len(activity.hours)} hours (UTC), stacked by"
            " reviewer; skips count, undone decisions do not."
        ),
        categories=labels,
        category_titles=titles,
        series=[(reviewer, table[reviewer]) for reviewer in activity.reviewers],
        x_label="hour (UTC)",
        y_label="decisions",
        unit="decisions",
    )


def classes_chart(tail: LongTail) -> Markup:
    return charts.bar_chart(
        chart_id="chart-classes",
        title="Images per class",
        description=(
            f"Images by the class of their current label, {len(tail.classes)} classes, most"
            " first, on a log scale; classes with no image are at the end."
        ),
        bars=[
            charts.Bar(
                label=c.name,
                value=c.images,
                tooltip=f"{c.name} ({c.status}): {c.images:,} images",
                css=f"status-{c.status}",
            )
            for c in tail.classes
        ],
        value_label="images",
        log=True,
        legend=STATUS_LEGEND,
    )


def accuracy_chart(history: AccuracyHistory) -> Markup:
    measured = history.measured
    position = {m.version_id: float(k) for k, m in enumerate(measured)}

    def tip(m: dashboard.ModelAccuracy, name: str, value: float, metric: str | None) -> str:
        role = " (champion)" if m.is_champion else f" ({m.status})"
        how = f" ({METRIC_NAMES.get(metric or '', metric)})" if metric else ""
        return f"model #{m.version_id}{role}, {stamp(m.created_at)}: {name} {percent(value)}{how}"

    readings: list[tuple[str, str, list[tuple[dashboard.ModelAccuracy, float, str | None]]]] = [
        (
            "accuracy",
            "s0",
            [(m, m.accuracy, m.accuracy_metric) for m in measured if m.accuracy is not None],
        ),
        (
            "top-5 accuracy",
            "s1",
            [(m, m.top5, m.top5_metric) for m in measured if m.top5 is not None],
        ),
    ]
    series = [
        charts.Series(
            name=name,
            points=[(position[m.version_id], value) for m, value, _ in rows],
            tooltips=[tip(m, name, value, metric) for m, value, metric in rows],
            marks=["champion" if m.is_champion else "" for m, _, _ in rows],
            css=css,
        )
        for name, css, rows in readings
        if rows
    ]
    step = max(1, -(-len(measured) // 12))
    ticks = [
        (position[m.version_id], f"#{m.version_id}" + (" ★" if m.is_champion else ""))
        for k, m in enumerate(measured)
        if k % step == 0 or m.is_champion
    ]
    return charts.line_chart(
        chart_id="chart-accuracy",
        title="Model accuracy by version",
        description=(
            "Recorded accuracy (and top-5 accuracy where recorded) of each model version,"
            " oldest first; the champion, which scores the queue, has a larger ring."
        ),
        series=series,
        x_ticks=ticks,
        x_range=(-0.5, max(len(measured) - 0.5, 0.5)),
        x_label="model version (oldest first; ★ champion)",
        y_label="accuracy",
        y_top=1.0,
        y_format=charts.percent_format,
        whole=False,
    )


# --- CSV ------------------------------------------------------------------------------------


def csv_cell(value: Any) -> Any:
    """A value as a spreadsheet cell: times in ISO 8601 UTC, no formula can start."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_response(filename: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Response:
    """UTF-8 with a byte-order mark (so Excel reads Korean names right), CRLF lines."""
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows([csv_cell(value) for value in row] for row in rows)
    response = Response(out.getvalue(), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["Cache-Control"] = "no-store"
    return response


@dataclass(frozen=True)
class Table:
    """A chart's numbers: the page's table and the CSV file share it."""

    name: str  # the file's stem
    header: list[str]
    rows: list[list[Any]]


def queue_table(history: QueueHistory) -> Table:
    return Table(
        "queue-size-by-reason",
        ["taken_at", "live", "ranking", "reason", "pending", "claimed", "held", "disputed", "open"],
        [
            [
                p.taken_at,
                p.live,
                p.ranking,
                p.reason,
                p.counts.pending,
                p.counts.claimed,
                p.counts.held,
                p.counts.disputed,
                p.counts.total,
            ]
            for p in history.points
        ],
    )


def decisions_table(activity: DecisionActivity) -> Table:
    return Table(
        "decisions-per-reviewer-per-hour",
        ["hour_start", "reviewer", "decisions", "skips"],
        [[row.hour, row.reviewer, row.decisions, row.skips] for row in activity.rows],
    )


def classes_table(tail: LongTail) -> Table:
    return Table(
        "images-per-class",
        ["rank", "class_id", "slug", "name", "status", "images"],
        [
            [k, c.class_id, c.slug, c.name, c.status, c.images]
            for k, c in enumerate(tail.classes, start=1)
        ],
    )


def accuracy_table(history: AccuracyHistory) -> Table:
    current = history.current.version_id if history.current else None
    return Table(
        "model-accuracy",
        [
            "model_version",
            "status",
            "current",
            "created_at",
            "accuracy",
            "accuracy_metric",
            "top5_accuracy",
            "top5_metric",
            "training_images",
        ],
        [
            [
                m.version_id,
                m.status,
                m.version_id == current,
                m.created_at,
                m.accuracy,
                m.accuracy_metric,
                m.top5,
                m.top5_metric,
                m.training_images,
            ]
            for m in history.models
        ],
    )


@dataclass(frozen=True)
class QueueRow:
    """One time of the queue chart's table: pending per reason, and all open items."""

    taken_at: datetime
    live: bool
    pending: list[int]  # in the order of QueueHistory.reasons
    open: int


def queue_rows(history: QueueHistory) -> list[QueueRow]:
    """The chart's points by time, newest (the live count) first."""
    index = {reason: k for k, reason in enumerate(history.reasons)}
    by_time: dict[tuple[datetime, bool], tuple[list[int], list[int]]] = {}
    for p in history.points:
        pending, total = by_time.setdefault((p.taken_at, p.live), ([0] * len(history.reasons), [0]))
        pending[index[p.reason]] = p.counts.pending
        total[0] += p.counts.total
    rows = [
        QueueRow(at, live, pending, total[0]) for (at, live), (pending, total) in by_time.items()
    ]
    rows.sort(key=lambda row: (row.live, row.taken_at), reverse=True)
    return rows


def _queue(session: Session, now: datetime) -> Table:
    return queue_table(dashboard.queue_history(session, now, days=_days()))


def _decisions(session: Session, now: datetime) -> Table:
    return decisions_table(dashboard.decisions_per_reviewer_hour(session, now, hours=_hours()))


def _classes(session: Session, now: datetime) -> Table:
    return classes_table(dashboard.images_per_class(session))


def _accuracy(session: Session, now: datetime) -> Table:
    return accuracy_table(dashboard.model_accuracy(session))


CSV_FILES: dict[str, Callable[[Session, datetime], Table]] = {
    "queue": _queue,
    "decisions": _decisions,
    "classes": _classes,
    "accuracy": _accuracy,
}


# --- views ----------------------------------------------------------------------------------


@blueprint.get("/dashboard")
@login_required
def page() -> ResponseReturnValue:
    hours, days, now = _hours(), _days(), _now()
    with _session() as session:
        history = dashboard.queue_history(session, now, days=days)
        activity = dashboard.decisions_per_reviewer_hour(session, now, hours=hours)
        tail = dashboard.images_per_class(session)
        accuracy = dashboard.model_accuracy(session)
    live = history.live
    return render_template(
        "dashboard.html",
        now=now,
        hours=hours,
        days=days,
        max_hours=dashboard.MAX_HOURS,
        max_days=dashboard.MAX_DAYS,
        snapshot_minutes=int(dashboard.SNAPSHOT_EVERY.total_seconds() // 60),
        history=history,
        live=live,
        stored_snapshots=len(history.points) - len(live),
        open_now={
            "pending": sum(p.counts.pending for p in live),
            "claimed": sum(p.counts.claimed for p in live),
            "held": sum(p.counts.held for p in live),
            "disputed": sum(p.counts.disputed for p in live),
        },
        activity=activity,
        tail=tail,
        accuracy=accuracy,
        charts={
            "queue": queue_chart(history)
            if any(p.counts.pending for p in history.points)
            else None,
            "decisions": decisions_chart(activity) if activity.rows else None,
            "classes": classes_chart(tail) if tail.classes else None,
            "accuracy": accuracy_chart(accuracy) if accuracy.measured else None,
        },
        queue_rows=queue_rows(history)[:QUEUE_TABLE_ROWS],
        queue_table_rows=QUEUE_TABLE_ROWS,
        tables={
            "decisions": decisions_table(activity),
            "classes": classes_table(tail),
            "accuracy": accuracy_table(accuracy),
        },
        stamp=stamp,
        percent=percent,
        metric_names=METRIC_NAMES,
    )


@blueprint.get("/dashboard/<name>.csv")
@login_required
def csv_file(name: str) -> ResponseReturnValue:
    build = CSV_FILES.get(name)
    if build is None:
        abort(404)
    now = _now()
    with _session() as session:
        table = build(session, now)
    return csv_response(f"{table.name}-{now:%Y%m%dT%H%MZ}.csv", table.header, table.rows)
