"""Judging ``metric`` rules: one Cloud Monitoring figure against its limits.

Too few requests is *no data*, never a pass: Cloud Run counts a request when
it ends (a WebSocket when it closes) and Monitoring shows points minutes
late, so a quiet candidate simply has nothing to say yet. The message says
so, with the numbers, asks whether the revision is receiving traffic and names
the reporting lag, the usual cause on Google Cloud.
"""

from __future__ import annotations

from deploy_guard.judge.assessment import Assessment
from deploy_guard.measurements import MetricMeasurement
from deploy_guard.policy.model import MetricSpec, Rule
from deploy_guard.policy.units import format_duration, format_measured, format_ratio


def format_value(spec: MetricSpec, value: float) -> str:
    """A value in the metric's unit: ``1.5%``, ``820ms``, ``140``."""
    if spec.type == "error_rate":
        return format_ratio(round(value, 6))
    if spec.type == "latency":
        return format_duration(round(value, 6))
    return f"{value:g}"


def format_observed(spec: MetricSpec, value: float, *, against: str | None = None) -> str:
    """A measured value, rounded for reading (``1.4s``, ``2.35%``), never hiding a breach.

    When rounding would make the value read the same as the limit it is
    compared ``against`` ("1s is over 1s"), more digits are shown.
    """
    if spec.type == "error_rate":
        text = f"{float(f'{value * 100:.3g}'):g}%"
        exact = f"{value * 100:.6g}%"
    elif spec.type == "latency":
        text = format_measured(value)
        exact = f"{value:.6g}s"
    else:
        return f"{value:g}"
    if against is not None and text == against:
        return exact
    return text


def _name(spec: MetricSpec) -> str:
    if spec.type == "latency":
        return f"p{spec.effective_percentile} latency"
    return spec.type.replace("_", " ")


def _threshold(spec: MetricSpec) -> str:
    parts: list[str] = []
    name = _name(spec)
    if spec.max is not None:
        parts.append(f"{name} <= {format_value(spec, spec.max)}")
    if spec.min is not None:
        parts.append(f"{name} >= {format_value(spec, spec.min)}")
    if spec.baseline is not None:
        plus = f" + {format_value(spec, spec.baseline.plus)}" if spec.baseline.plus else ""
        parts.append(f"{name} <= baseline x {spec.baseline.factor:g}{plus}")
    return ", ".join(parts)


#: run.googleapis.com points: "Sampled every 60 seconds. After sampling, data is not
#: visible for up to 180 seconds."
_LAG_S = 180


def assess_metric(rule: Rule, m: MetricMeasurement) -> Assessment:
    """Judge one pass of a metric rule (``decided`` is left to the caller's limits)."""
    spec = rule.metric
    assert spec is not None
    threshold = _threshold(spec)
    window = format_measured(m.window_seconds) if m.window_seconds else format_duration(spec.window)
    where = f"revision {m.revision}" if m.revision else "the candidate revision"
    value = m.value
    if value is None and m.note:  # the source knows why there is nothing (yet)
        return Assessment(
            "no_data",
            m.complete,
            None,
            threshold,
            f"nothing read for {where}",
            message=m.note,
        )
    if value is None or m.requests < spec.min_requests:
        counts = f"{m.requests} requests in {window}; min_requests {spec.min_requests}"
        seconds = m.window_seconds or spec.window
        lag = (
            f" (Cloud Monitoring shows a request up to {_LAG_S // 60} minutes after it ends; "
            f"{window} is too short to count on it)"
            if seconds < _LAG_S + 60
            else ""
        )
        return Assessment(
            "no_data",
            m.complete,
            value,
            threshold,
            counts,
            message=f"only {m.requests} requests reached {where} in {window}; "
            f"min_requests is {spec.min_requests}; is it receiving traffic?{lag}",
        )
    shown = format_observed(spec, value)
    counts = f"{_name(spec)} {shown} over {m.requests} requests in {window}"
    broken: list[str] = []
    if spec.max is not None and value > spec.max:
        ceiling = format_value(spec, spec.max)
        broken.append(f"{format_observed(spec, value, against=ceiling)} is over {ceiling}")
    if spec.min is not None and value < spec.min:
        floor = format_value(spec, spec.min)
        broken.append(f"{format_observed(spec, value, against=floor)} is under {floor}")
    if spec.baseline is not None:
        base = m.baseline_value
        if base is None or m.baseline_requests < spec.min_requests:
            if spec.max is None and spec.min is None:
                return Assessment(
                    "no_data",
                    m.complete,
                    value,
                    threshold,
                    counts,
                    message=f"the baseline revision had {m.baseline_requests} requests in "
                    f"{window}; min_requests is {spec.min_requests}, so there is nothing to "
                    "compare with (is the previous revision still serving traffic?)",
                )
            counts += "; baseline: too few requests, not compared"
        else:
            limit = base * spec.baseline.factor + spec.baseline.plus
            limit_text = format_observed(spec, limit)
            counts += f"; baseline {format_observed(spec, base)}, limit {limit_text}"
            if value > limit:
                over = format_observed(spec, value, against=limit_text)
                broken.append(f"{over} is over baseline's limit {limit_text}")
    if broken:
        return Assessment("fail", m.complete, value, threshold, counts, message="; ".join(broken))
    return Assessment("pass", m.complete, value, threshold, counts)
