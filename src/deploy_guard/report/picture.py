"""The sessions picture: every probe session a lane on the run's time axis (pure geometry).

The failure this tool was born from is a shape: sessions that open, run their
events, hold, and all die about seven seconds in. A table of counts says it;
a picture shows it at a glance. :func:`picture` turns the report's ``traces``
(:mod:`deploy_guard.traces`) and ``timeline`` into plain shapes in pixels (bars,
ticks, markers, vertical marks, axis ticks) that the HTML template draws as
inline SVG, and :func:`headlines` says the shape in one sentence per rule
("chat-hold: every session (5 of 5) closed with 1011, 7.0 s after it opened").

A lane: the handshake, the scenario (its events as ticks), the hold, and a
marker where it ended, coloured by how (a clean close, 1011, a drop, another
failure, cut by the guard); a session that died before its hold was over shows
the rest of the hold it wanted as a dashed outline. Under the lanes, one row
per logs rule (a tick per matching entry) and per metric rule (a dot per
pass); across everything, the first failure, the decision and each traffic
change. Every text is data for the template, which escapes it: none of it is
trusted (event names and log lines come from the service under test).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Geometry of the SVG, in its own units (it scales to the page's width).
WIDTH = 960
GUTTER = 150  # the rows' labels on the left
RIGHT = 24
AXIS = 60.0  # above the lanes: up to three rows of mark labels, then the time axis
LABEL_ROWS = (12.0, 25.0, 38.0)
CHAR = 6.0  # the width of a label's character, near enough
LANE, PITCH = 6.0, 9.0  # a lane's bar height, and from one lane to the next
THIN, THIN_PITCH = 3.0, 4.0  # the same for a rule whose every session passed: they are context
HEAD = 20.0  # a rule's title row
ROW = 22.0  # a logs or metric row
MIN_BAR = 1.5  # the narrowest bar drawn (a 3 ms request still shows)

#: Timeline events drawn as vertical marks across the picture: name -> (css class, label).
_MARKS = {
    "first_failure_seen": ("mark-fail", "first failure"),
    "decision": ("mark-decision", "decision"),
}
_TRAFFIC_SUFFIX = "_verified"


@dataclass(frozen=True)
class Shape:
    """A rectangle (``w`` > 0), a tick (``w`` == 0) or a dot (``r`` > 0); ``title`` hovers."""

    x: float
    y: float
    w: float = 0.0
    h: float = 0.0
    r: float = 0.0
    cls: str = ""
    title: str = ""


@dataclass
class Group:
    """One rule's lanes, under its title."""

    rule: str
    kind: str
    y: float
    title: str
    status: str = ""
    #: The whole title, where ``title`` had to be cut to fit the labels' column.
    tip: str = ""
    lanes: list[list[Shape]] = field(default_factory=list)
    lane_titles: list[str] = field(default_factory=list)
    lane_ys: list[float] = field(default_factory=list)


@dataclass
class Picture:
    width: float
    height: float
    left: float
    right: float
    top: float
    bottom: float
    groups: list[Group]
    rows: list[Group]
    marks: list[Shape]
    labels: list[Shape]
    ticks: list[Shape]
    headlines: list[str]
    notes: list[str]


class _Scale:
    def __init__(self, x0: float, x1: float) -> None:
        self.x0, self.x1 = x0, x1 if x1 > x0 else x0 + 1.0
        self.left, self.width = float(GUTTER), float(WIDTH - GUTTER - RIGHT)

    def x(self, t: float) -> float:
        return round(self.left + (t - self.x0) / (self.x1 - self.x0) * self.width, 2)

    def w(self, t0: float, t1: float) -> float:
        return round(max(MIN_BAR, self.x(t1) - self.x(t0)), 2)


def seconds(value: float) -> str:
    """``7.0 s``, ``0.45 s``, ``16 ms``, ``2m05s``: a duration for the picture's words."""
    if value < 0.1:
        return f"{value * 1000:.0f} ms"
    if value < 10:
        return f"{value:.2f} s" if value < 1 else f"{value:.1f} s"
    if value < 120:
        return f"{value:.0f} s"
    minutes, rest = divmod(round(value), 60)
    if minutes < 120:
        return f"{minutes}m{rest:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


#: Axis steps past a minute: whole minutes and hours, as a clock reads.
_CLOCK_STEPS = (60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 10800.0, 21600.0)


def nice_step(span: float, ticks: int = 8) -> float:
    """An axis step giving about ``ticks`` ticks over ``span`` seconds: 1, 2 or 5 times a
    power of ten under a minute, whole minutes or hours above (a day at most: 1, 2, 5 days)."""
    raw = max(span, 1e-3) / ticks
    if raw > 30:
        clock = next((step for step in _CLOCK_STEPS if step >= raw), None)
        if clock is not None:
            return clock
        days = raw / 86400.0
        return (
            86400.0 * next(m for m in (1.0, 2.0, 5.0, 10.0, 20.0, 50.0) if m >= days)
            if days <= 50
            else raw
        )
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1.0, 2.0, 5.0, 10.0) if m * power >= raw)


def tick_label(value: float, step: float) -> str:
    """An axis label: ``0 s``, ``2 s``, ``0.5 s``, ``2m``, ``1h30m``, as precise as the step."""
    if step >= 60 and abs(value) >= 60:
        minutes = round(value / 60)
        if abs(minutes) < 120:
            return f"{minutes}m"
        hours, rest = divmod(minutes, 60)
        return f"{hours}h{rest:02d}m" if rest else f"{hours}h"
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    return f"{value:.{decimals}f} s"


def _failing_first(books: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The rules whose sessions failed (or were cut) first, each group in the report's order."""
    rows = list(books.items())
    return sorted(rows, key=lambda item: not (item[1].get("failed") or item[1].get("cut")))


def end_class(s: dict[str, Any]) -> str:
    """How a session ended, as the marker's class: ok, c1011, drop, fail, cut."""
    if s.get("cut"):
        return "cut"
    if s.get("ok"):
        return "ok"
    if s.get("close_code") == 1011:
        return "c1011"
    if s.get("close_code") == 1006 or s.get("closed_by") == "network":
        return "drop"
    return "fail"


def _ended(s: dict[str, Any]) -> float:
    """Seconds from a session's start to its close (its end when no close was seen)."""
    closed = s.get("closed_at")
    return float(closed if closed is not None else s.get("end") or 0.0)


def headlines(traces: dict[str, Any]) -> list[str]:
    """One sentence per rule with failed sessions: how many, how they ended, and when."""
    out = []
    for rule, book in (traces.get("sessions") or {}).items():
        failed = [s for s in book.get("sessions", []) if not s.get("ok") and not s.get("cut")]
        if not failed:
            continue
        unit = "request" if book.get("kind") == "http" else "session"
        finished = int(book.get("seen", 0)) - int(book.get("cut", 0))
        count = int(book.get("failed", len(failed)))
        who = (
            f"every {unit} ({count} of {finished})"
            if count == finished
            else f"{count} of {finished} {unit}s"
        )
        codes = Counter(
            s.get("close_code") for s in failed if s.get("close_code") not in (None, 1000)
        )
        causes = Counter(str(s.get("cause") or "failed") for s in failed)
        if codes:
            code, _n = codes.most_common(1)[0]
            how = f"closed with {code}"
        elif unit == "request":
            statuses = Counter(s.get("status") for s in failed if s.get("status"))
            how = (
                f"answered {statuses.most_common(1)[0][0]}"
                if statuses
                else f"failed ({causes.most_common(1)[0][0]})"
            )
        else:
            how = f"failed ({causes.most_common(1)[0][0].replace('_', ' ')})"
        lives = sorted(_ended(s) for s in failed)
        middle = lives[len(lives) // 2]
        when = f"{seconds(middle)} after it opened" if unit == "session" else ""
        if unit == "session" and lives[-1] - lives[0] >= 0.1:
            when = f"about {when} ({seconds(lives[0])} to {seconds(lives[-1])})"
        text = f"{rule}: {who} {how}" + (f", {when}" if when else "")
        cut = int(book.get("cut") or 0)
        if cut:
            text += (
                f"; {cut} more {unit}s were stopped by the guard before they ended"
                if cut > 1
                else f"; 1 more {unit} was stopped by the guard before it ended"
            )
        out.append(text)
    return out


def _lane_title(s: dict[str, Any], kind: str) -> str:
    parts = []
    who = " ".join(str(v) for v in (s.get("user"), s.get("session")) if v)
    if who:
        parts.append(who)
    parts.append(f"started at {seconds(float(s.get('t', 0.0)))}")
    if kind == "http":
        parts.append(f"took {seconds(float(s.get('end') or 0.0))}")
        if s.get("status") is not None:
            parts.append(f"HTTP {s['status']}")
    else:
        if s.get("handshake") is not None:
            parts.append(f"handshake {seconds(float(s['handshake']))}")
        named = [name for _at, name in s.get("events", []) if name]
        if named:
            parts.append(f"{len(named)} events ({', '.join(named[:6])})")
        if s.get("hold") is not None:
            wanted = f", {seconds(float(s['hold_wanted']))} wanted" if s.get("hold_wanted") else ""
            parts.append(f"hold from {seconds(float(s['hold']))}{wanted}")
        if s.get("cut"):
            parts.append(f"stopped by the guard at {seconds(float(s.get('end') or 0.0))}")
        elif s.get("close_code") is not None:
            by = f" by the {s['closed_by']}" if s.get("closed_by") else ""
            parts.append(f"closed {s['close_code']}{by} at {seconds(_ended(s))}")
    if s.get("detail"):
        parts.append(str(s["detail"]))
    return " · ".join(parts)


def _lane(
    s: dict[str, Any], kind: str, y: float, scale: _Scale, height: float = LANE
) -> list[Shape]:
    """The shapes of one session's lane (``y``: the lane's top)."""
    t = float(s.get("t", 0.0))
    end = float(s.get("end") or 0.0)
    mid = y + height / 2
    cls = end_class(s)
    if kind == "http":
        return [Shape(scale.x(t), y, scale.w(t, t + end), height, cls=f"req {cls}")]
    shapes = [Shape(scale.x(t), mid, scale.w(t, t + end), 0.0, cls="life")]
    hs = s.get("handshake")
    hold = s.get("hold")
    if hs is not None:
        shapes.append(Shape(scale.x(t), y, scale.w(t, t + hs), height, cls="hs"))
        run_end = float(hold) if hold is not None else end
        if run_end > hs:
            shapes.append(
                Shape(scale.x(t + hs), y, scale.w(t + hs, t + run_end), height, cls="run")
            )
    if hold is not None and end > hold:
        shapes.append(Shape(scale.x(t + hold), y, scale.w(t + hold, t + end), height, cls="hold"))
    wanted = s.get("hold_wanted")
    if hold is not None and wanted and not s.get("ok") and end < hold + wanted - 0.05:
        planned = min(t + hold + float(wanted), scale.x1)  # past the axis: to its end
        if planned > t + end:
            shapes.append(
                Shape(scale.x(t + end), y, scale.w(t + end, planned), height, cls="wanted")
            )
    for at, _name in s.get("events", []):
        shapes.append(Shape(scale.x(t + float(at)), y - 1, 0.0, height + 2, cls="ev"))
    shapes.append(
        Shape(scale.x(t + _ended(s)), mid, r=min(3.2, height / 2 + 0.8), cls=f"end {cls}")
    )
    return shapes


def _marks(timeline: Sequence[Any]) -> list[tuple[float, str, str]]:
    """(t, class, label) of the timeline events drawn across the picture."""
    out: list[tuple[float, str, str]] = []
    seen: set[str] = set()
    for event in timeline:
        if not isinstance(event, dict):
            continue
        name = str(event.get("event", ""))
        t = event.get("t")
        if not isinstance(t, int | float):
            continue
        if name in _MARKS and name not in seen:
            seen.add(name)
            cls, label = _MARKS[name]
            out.append((float(t), cls, label))
        elif name.endswith(_TRAFFIC_SUFFIX):
            what = name[: -len(_TRAFFIC_SUFFIX)].replace("_", " ")
            detail = event.get("detail")
            traffic = detail.get("traffic") if isinstance(detail, dict) else None
            label = f"{what}: {traffic}" if traffic else what
            out.append((float(t), "mark-traffic", label))
    return out


def _first_failure(sessions: Iterable[dict[str, Any]]) -> float | None:
    ends = [float(s["t"]) + _ended(s) for s in sessions if not s.get("ok") and not s.get("cut")]
    return min(ends) if ends else None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _books(
    value: Any, key: str, clean: Callable[[Any], dict[str, Any] | None]
) -> dict[str, dict[str, Any]]:
    """A traces table read back from a file, each entry cleaned and any that is not what it
    should be left out (a report is data from anywhere: the picture draws what it can)."""
    if not isinstance(value, dict):
        return {}
    out = {}
    for rule, book in value.items():
        if isinstance(book, dict):
            entries = book.get(key)
            cleaned = [clean(e) for e in entries] if isinstance(entries, list) else []
            out[str(rule)] = {**book, key: [e for e in cleaned if e is not None]}
    return out


def _clean_session(s: Any) -> dict[str, Any] | None:
    """A session with its times as numbers (None where a time is missing), or None."""
    if not (isinstance(s, dict) and _number(s.get("t")) and _number(s.get("end"))):
        return None
    events = s.get("events")
    out = {k: (s.get(k) if _number(s.get(k)) else None) for k in _TIMES}
    out["events"] = [
        (float(e[0]), str(e[1]))
        for e in (events if isinstance(events, list) else [])
        if isinstance(e, list | tuple) and len(e) == 2 and _number(e[0])
    ]
    return {**s, **out}


#: A session's times that must be numbers (or None) for its lane to be drawn.
_TIMES = ("handshake", "hold", "hold_wanted", "closed_at")


def _timed(entry: Any) -> dict[str, Any] | None:
    return entry if isinstance(entry, dict) and _number(entry.get("t")) else None


def picture(document: dict[str, Any]) -> Picture | None:
    """The picture of a report's traces, or None when it recorded no session, match or point."""
    traces = document.get("traces")
    traces = traces if isinstance(traces, dict) else {}
    books = _books(traces.get("sessions"), "sessions", _clean_session)
    logs = _books(traces.get("log_matches"), "matches", _timed)
    metrics = _books(traces.get("metric_points"), "points", _timed)
    if (
        not any(b["sessions"] for b in books.values())
        and not any(k["matches"] for k in logs.values())
        and not any(k["points"] for k in metrics.values())
    ):
        return None
    traces = {**traces, "sessions": books}
    statuses = {
        str(r.get("rule")): str(r.get("status", ""))
        for r in document.get("rules") or []
        if isinstance(r, dict)
    }
    every = [s for book in books.values() for s in book.get("sessions", [])]
    marks = _marks(document.get("timeline") or [])
    if not any(cls == "mark-fail" for _t, cls, _l in marks):
        first = _first_failure(every)  # a watch has no first_failure_seen: its sessions say it
        if first is not None:
            marks.append((first, "mark-fail", "first failure"))
    times = [float(s["t"]) for s in every] + [float(s["t"]) + float(s["end"]) for s in every]
    times += [float(m["t"]) for k in logs.values() for m in k.get("matches", [])]
    times += [float(p["t"]) for k in metrics.values() for p in k.get("points", [])]
    times += [t for t, _c, _l in marks]
    lo, hi = min(times), max(times)
    step = nice_step(hi - lo)
    scale = _Scale(math.floor(lo / step) * step, math.ceil(hi / step) * step)
    y = float(AXIS)
    groups = []
    for rule, book in _failing_first(books):
        kind = str(book.get("kind", "websocket"))
        group = Group(rule, kind, y, _group_title(rule, book), statuses.get(rule, ""))
        y += HEAD
        sessions = sorted(book.get("sessions", []), key=lambda s: float(s["t"]))
        quiet = all(s.get("ok") for s in sessions)
        height, pitch = (THIN, THIN_PITCH) if quiet else (LANE, PITCH)
        for s in sessions:
            group.lanes.append(_lane(s, kind, y, scale, height))
            group.lane_titles.append(_lane_title(s, kind))
            group.lane_ys.append(y)
            y += pitch
        groups.append(group)
        y += 6
    rows = []
    for rule, kept in logs.items():
        tip = f"logs · {rule}: {kept.get('seen', 0)} matching entries"
        row = Group(rule, "logs", y, _fit(f"logs · {rule}"), statuses.get(rule, ""), tip)
        bad = row.status in ("fail", "warn")
        row.lanes.append(
            [
                Shape(
                    scale.x(float(m["t"])),
                    y + 3,
                    0.0,
                    ROW - 6,
                    cls="logmatch bad" if bad else "logmatch",
                    title=f"{m.get('at', '')} {m.get('severity', '')} {m.get('text', '')}",
                )
                for m in kept.get("matches", [])
            ]
        )
        rows.append(row)
        y += ROW
    for rule, kept in metrics.items():
        metric = str(kept.get("metric", ""))
        tip = f"metric · {rule} ({metric}): {kept.get('seen', 0)} passes"
        row = Group(rule, "metric", y, _fit(f"metric · {rule}"), statuses.get(rule, ""), tip)
        row.lanes.append(
            [
                Shape(
                    scale.x(float(p["t"])),
                    y + ROW / 2,
                    r=3.5,
                    cls="point" if p.get("value") is not None else "point none",
                    title=_point_title(rule, metric, p),
                )
                for p in kept.get("points", [])
            ]
        )
        rows.append(row)
        y += ROW
    bottom = y + 4
    drawn = [
        Shape(
            scale.x(t), AXIS - 4, 0.0, bottom - AXIS + 4, cls=cls, title=f"{label} at {seconds(t)}"
        )
        for t, cls, label in sorted(marks)
    ]
    ticks = [
        Shape(scale.x(scale.x0 + k * step), AXIS - 8, title=tick_label(scale.x0 + k * step, step))
        for k in range(round((scale.x1 - scale.x0) / step) + 1)
    ]
    return Picture(
        width=WIDTH,
        height=bottom + 6,
        left=scale.left,
        right=scale.left + scale.width,
        top=AXIS,
        bottom=bottom,
        groups=groups,
        rows=rows,
        marks=drawn,
        labels=mark_labels([(scale.x(t), cls, label, t) for t, cls, label in marks]),
        ticks=ticks,
        headlines=headlines(traces),
        notes=_notes(books, logs, metrics, traces),
    )


def mark_labels(marks: Sequence[tuple[float, str, str, float]]) -> list[Shape]:
    """Labels for the vertical marks, above the axis: marks a few pixels apart share one
    ("first failure · decision at 7.5 s"); the rest take the first row where they fit."""
    merged: list[tuple[float, str, list[str], float]] = []
    for x, cls, label, t in sorted(marks):
        if merged and x - merged[-1][0] < 8 and label not in merged[-1][2]:
            merged[-1][2].append(label)
        elif not merged or x - merged[-1][0] >= 8:
            merged.append((x, cls, [label], t))
    ends = [float("-inf")] * len(LABEL_ROWS)
    out = []
    for x, cls, labels, t in merged:
        text = f"{' · '.join(labels)} at {seconds(t)}"
        width = len(text) * CHAR
        right_aligned = x + width > WIDTH - 4
        start = x - width if right_aligned else x
        row = next((i for i, end in enumerate(ends) if end < start - 6), len(ends) - 1)
        ends[row] = x if right_aligned else x + width
        anchor = "end" if right_aligned else "start"
        out.append(Shape(x, LABEL_ROWS[row], cls=f"label {cls} {anchor}", title=text))
    return out


def _fit(text: str) -> str:
    """``text`` cut to fit the labels' column (the row's tooltip has all of it)."""
    room = int((GUTTER - 16) / CHAR)
    return text if len(text) <= room else text[: room - 1] + "…"


def _group_title(rule: str, book: dict[str, Any]) -> str:
    unit = "requests" if book.get("kind") == "http" else "sessions"
    shown = len(book.get("sessions", []))
    text = f"{rule} · {book.get('kind', '')} · {book.get('seen', 0)} {unit}"
    extra = []
    if book.get("failed"):
        extra.append(f"{book['failed']} failed")
    if book.get("cut"):
        extra.append(f"{book['cut']} stopped by the guard")
    if shown < int(book.get("seen", 0)):
        extra.append(f"{shown} drawn")
    return text + (f" ({', '.join(extra)})" if extra else "")


def _point_title(rule: str, metric: str, p: dict[str, Any]) -> str:
    value = p.get("value")
    if p.get("error"):
        shown = f"error: {p['error']}"
    elif value is None:
        shown = "no data"
    elif metric == "error_rate":
        shown = f"{value * 100:.3g}%"
    elif metric == "latency":
        shown = seconds(float(value))
    else:
        shown = f"{value:g}"
    requests = f" over {p.get('requests', 0)} requests" if p.get("requests") else ""
    return f"{rule} at {p.get('at') or ''}: {shown}{requests}"


def _notes(
    books: dict[str, Any], logs: dict[str, Any], metrics: dict[str, Any], traces: dict[str, Any]
) -> list[str]:
    """What the picture leaves out: sessions, matches and points counted but not kept."""
    notes = []
    for rule, book in books.items():
        if book.get("left_out"):
            notes.append(
                f"{rule}: {book['left_out']} passing sessions not drawn (a report keeps the "
                "first sessions and every failed one, up to a bound)"
            )
    for rule, kept in [*logs.items(), *metrics.items()]:
        if kept.get("left_out"):
            notes.append(f"{rule}: {kept['left_out']} in the middle of the run not drawn")
    if traces.get("rules_left_out"):
        notes.append(f"{traces['rules_left_out']} records of further rules not kept")
    return notes
