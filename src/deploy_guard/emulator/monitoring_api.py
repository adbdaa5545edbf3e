"""Cloud Monitoring v3 (``google.monitoring.v3.MetricService``) over gRPC, from a MetricStore.

Served with a generic handler; the official ``MetricServiceClient`` talks to
it unchanged. ``ListTimeSeries`` supports:

- ``name``: ``projects/P`` (required; the store is one project's, so P is
  only checked for shape).
- ``filter``: the Monitoring filter subset the guard needs. Exactly one
  ``metric.type = "..."`` term, ANDed with any of ``resource.type = "..."``,
  ``project = "..."`` (the project the request names matches; any other
  project matches nothing),
  ``resource.labels.KEY`` / ``resource.label.KEY``, ``metric.labels.KEY`` /
  ``metric.label.KEY`` compared with ``=``, ``!=``, ``:`` (substring) or the
  functions ``one_of("a", "b")``, ``starts_with("p")``, ``ends_with("s")``,
  ``has_substring("x")``, ``monitoring.regex.full_match("re")``; terms may be
  combined with ``AND``, ``OR``, ``NOT`` and parentheses (``AND`` binds
  tighter than ``OR``). Anything else is INVALID_ARGUMENT naming the term.
- ``interval``: ``end_time`` required (as in the real API); ``start_time``
  optional (an instant otherwise).
- ``aggregation``: ``alignment_period``, ``per_series_aligner`` (NONE, DELTA,
  RATE, SUM, MEAN, COUNT, MIN, MAX, PERCENTILE_05/50/95/99),
  ``cross_series_reducer`` (NONE, SUM, MEAN, COUNT, MIN, MAX,
  PERCENTILE_05/50/95/99) and ``group_by_fields``. ``secondary_aggregation``
  and ``order_by`` are ignored.
- ``view`` FULL or HEADERS (series without points); ``page_size`` (0 = all)
  and opaque ``page_token``.

Points come newest first, like the real API. Unknown metric types give no
series (not an error), as Cloud Monitoring does for a metric with no data.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import grpc

from deploy_guard.emulator.metricstore import RESOURCE_TYPE, MetricStore, Query, Series
from deploy_guard.emulator.rpc import ServiceHandler, generic_handler
from deploy_guard.errors import EmulatorError

SERVICE = "google.monitoring.v3.MetricService"


Ctx = dict[str, str]  # "metric.type", "resource.type", "metric.labels.k", "resource.labels.k"
Pred = Callable[[Ctx], bool]


def _invalid(message: str) -> EmulatorError:
    return EmulatorError("INVALID_ARGUMENT", message)


# ---------------------------------------------------------------- filter

_TOKEN = re.compile(
    r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<op>!=|=|:)|(?P<punct>[(),])'
    r"|(?P<word>[A-Za-z_][\w.\-/]*))"
)
_FUNCTIONS: dict[str, Callable[[str, list[str]], bool]] = {
    "one_of": lambda v, args: v in args,
    "starts_with": lambda v, args: v.startswith(args[0]),
    "ends_with": lambda v, args: v.endswith(args[0]),
    "has_substring": lambda v, args: args[0] in v,
    "monitoring.regex.full_match": lambda v, args: re.fullmatch(args[0], v) is not None,
}


class _MetricFilter:
    """Recursive descent over the token list; ``metric_types`` collects ``metric.type =``."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.toks: list[tuple[str, str, int]] = []
        pos = 0
        while pos < len(text):
            if not text[pos:].strip():
                break
            m = _TOKEN.match(text, pos)
            if m is None or m.end() == pos:
                raise _invalid(f"filter {text!r}: cannot parse at position {pos + 1}")
            kind = m.lastgroup or ""
            value, at = m.group(kind), m.start(kind) + 1
            if kind == "punct" or (kind == "word" and value in ("AND", "OR", "NOT")):
                kind = value
            if kind == "str":
                value = json.loads(value) if "\\" in value else value[1:-1]
            self.toks.append((kind, value, at))
            pos = m.end()
        self.i = 0
        self.metric_types: list[str] = []

    def peek(self) -> tuple[str, str, int]:
        return self.toks[self.i] if self.i < len(self.toks) else ("eof", "", len(self.text) + 1)

    def take(self, kind: str | None = None) -> tuple[str, str, int]:
        tok = self.peek()
        if kind is not None and tok[0] != kind:
            where = f"'{tok[1]}'" if tok[1] else "the end"
            raise _invalid(f"filter {self.text!r}: expected {kind} at {where} (position {tok[2]})")
        self.i += 1
        return tok

    def parse(self) -> Pred:
        pred = self.or_expr(top=True)
        if self.peek()[0] != "eof":
            tok = self.peek()
            raise _invalid(f"filter {self.text!r}: unexpected '{tok[1]}' at position {tok[2]}")
        return pred

    def or_expr(self, top: bool = False) -> Pred:
        terms = [self.and_expr(top)]
        while self.peek()[0] == "OR":
            self.take()
            terms.append(self.and_expr(False))
        if len(terms) == 1:
            return terms[0]
        return lambda c: any(t(c) for t in terms)

    def and_expr(self, top: bool) -> Pred:
        terms = [self.unary(top)]
        while self.peek()[0] in ("AND", "word", "NOT", "("):
            if self.peek()[0] == "AND":
                self.take()
            terms.append(self.unary(top))
        if len(terms) == 1:
            return terms[0]
        return lambda c: all(t(c) for t in terms)

    def unary(self, top: bool) -> Pred:
        kind = self.peek()[0]
        if kind == "NOT":
            self.take()
            inner = self.unary(False)
            return lambda c: not inner(c)
        if kind == "(":
            self.take()
            inner = self.or_expr()
            self.take(")")
            return inner
        return self.comparison(top)

    def comparison(self, top: bool) -> Pred:
        _, field, _ = self.take("word")
        field = field.replace(".label.", ".labels.")
        if field not in ("metric.type", "resource.type", "project") and not re.fullmatch(
            r"(metric|resource)\.labels\.[\w\-/.]+", field
        ):
            raise _invalid(f"filter {self.text!r}: field {field!r} is not supported")
        _, op, _ = self.take("op")
        kind, value, vpos = self.take()
        if kind == "word" and not (value in _FUNCTIONS and self.peek()[0] == "("):
            kind = "str"  # a bare value: cloud_run_revision
        if kind == "str":
            if field == "metric.type":
                if op != "=" or not top:
                    raise _invalid(
                        f'filter {self.text!r}: use exactly one top-level metric.type = "..."'
                    )
                self.metric_types.append(value)
            return _test(field, op, lambda v: v == value, lambda v: value in v)
        if kind == "word" and value in _FUNCTIONS and op == "=":
            self.take("(")
            args: list[str] = []
            while self.peek()[0] != ")":
                if args:
                    self.take(",")
                args.append(self.take("str")[1])
            self.take(")")
            if not args:
                raise _invalid(f"filter {self.text!r}: {value}() needs an argument")
            if value == "monitoring.regex.full_match":
                try:
                    re.compile(args[0])
                except re.error as exc:
                    raise _invalid(f"filter {self.text!r}: bad regular expression: {exc}") from exc
            fn = _FUNCTIONS[value]
            return _test(field, "=", lambda v: fn(v, args), lambda v: False)
        raise _invalid(f"filter {self.text!r}: expected a quoted value at position {vpos}")


def _test(field: str, op: str, equal: Callable[[str], bool], has: Callable[[str], bool]) -> Pred:
    if op == ":":
        return lambda c: field in c and has(c[field])
    if op == "!=":
        return lambda c: not (field in c and equal(c[field]))
    return lambda c: field in c and equal(c[field])


def parse_filter(
    text: str, project: str = ""
) -> tuple[str, Callable[[dict[str, str], dict[str, str]], bool]]:
    """The filter's metric type and a predicate on (metric labels, resource labels).

    ``project`` is the project the request names: every series is in it, so
    ``project = "<it>"`` matches and a ``project`` selector naming any other
    project matches nothing.
    """
    parser = _MetricFilter(text)
    pred = parser.parse()
    if len(parser.metric_types) != 1:
        raise _invalid(f'filter {text!r} must contain exactly one metric.type = "..." term')
    metric_type = parser.metric_types[0]

    def matches(metric: dict[str, str], resource: dict[str, str]) -> bool:
        ctx = {"metric.type": metric_type, "resource.type": RESOURCE_TYPE, "project": project}
        ctx.update({f"metric.labels.{k}": v for k, v in metric.items()})
        ctx.update({f"resource.labels.{k}": v for k, v in resource.items()})
        return pred(ctx)

    return metric_type, matches


# ---------------------------------------------------------------- request -> query


def build_query(request: Any) -> Query:
    """Validate a ListTimeSeriesRequest and turn it into a store :class:`Query`."""
    parts = request.name.split("/")
    if len(parts) != 2 or parts[0] != "projects" or not parts[1]:
        raise _invalid(f"name {request.name!r} must be projects/PROJECT_ID")
    if not request.filter:
        raise _invalid('filter is required and must name one metric.type = "..."')
    metric_type, matches = parse_filter(request.filter, project=parts[1])
    if "interval" not in request or "end_time" not in request.interval:
        raise _invalid("interval.end_time is required")
    end = _utc(request.interval.end_time)
    start = _utc(request.interval.start_time) if "start_time" in request.interval else None
    if start is not None and start > end:
        raise _invalid("interval.start_time must not be after interval.end_time")
    agg = request.aggregation
    return Query(
        metric_type=metric_type,
        matches=matches,
        start=start,
        end=end,
        aligner=_enum_name(agg.per_series_aligner, "ALIGN"),
        alignment_period_s=agg.alignment_period.total_seconds() if agg.alignment_period else 0.0,
        reducer=_enum_name(agg.cross_series_reducer, "REDUCE"),
        group_by=tuple(agg.group_by_fields),
    )


def _enum_name(value: Any, prefix: str) -> str:
    """An enum's name; a number no enum value has becomes ``ALIGN_#999`` (refused later)."""
    return str(getattr(value, "name", f"{prefix}_#{int(value)}"))


def _utc(when: datetime) -> datetime:
    return when.astimezone(UTC)


def _to_proto(series: Series, headers_only: bool) -> Any:
    from google.api import distribution_pb2
    from google.cloud import monitoring_v3

    def typed(value: int | float | list[float]) -> Any:
        if isinstance(value, list):
            from deploy_guard.emulator.metricstore import distribution

            d = distribution(value)
            exp = d["bucket_options"]["exponential_buckets"]
            return {
                "distribution_value": distribution_pb2.Distribution(
                    count=d["count"],
                    mean=d["mean"],
                    sum_of_squared_deviation=d["sum_of_squared_deviation"],
                    bucket_options=distribution_pb2.Distribution.BucketOptions(
                        exponential_buckets=distribution_pb2.Distribution.BucketOptions.Exponential(
                            **exp
                        )
                    ),
                    bucket_counts=d["bucket_counts"],
                )
            }
        if series.value_type == "INT64":
            return {"int64_value": int(value)}
        return {"double_value": float(value)}

    points = [] if headers_only else series.points
    return monitoring_v3.TimeSeries(
        metric={"type": series.metric_type, "labels": series.metric_labels},
        resource={"type": RESOURCE_TYPE, "labels": series.resource_labels},
        metric_kind=series.metric_kind,
        value_type=series.value_type,
        unit="ms" if series.value_type == "DISTRIBUTION" else "1",
        points=[
            {
                "interval": {"start_time": p.start, "end_time": p.end},
                "value": typed(p.value),
            }
            for p in points
        ],
    )


def _page(total: int, page_size: int, token: str, query_key: str) -> tuple[int, int, str]:
    """(start, stop, next token) for offset paging bound to the query."""
    if page_size < 0:
        raise _invalid(f"page_size {page_size} must not be negative")
    start = 0
    if token:
        try:
            data = json.loads(base64.urlsafe_b64decode(token.encode()))
            start = int(data["o"])
            ok = data.get("q") == query_key and 0 <= start <= total
        except (binascii.Error, ValueError, TypeError, KeyError):
            ok = False
        if not ok:
            raise _invalid(f"page_token {token!r} is invalid for this request")
    stop = total if page_size == 0 else min(total, start + page_size)
    nxt = ""
    if stop < total:
        nxt = base64.urlsafe_b64encode(json.dumps({"o": stop, "q": query_key}).encode()).decode()
    return start, stop, nxt


def list_time_series(store: MetricStore, request: Any) -> Any:
    """One page of ``ListTimeSeries`` from ``store`` (the gRPC method and the REST form's)."""
    from google.cloud import monitoring_v3

    query = build_query(request)
    series = store.query(query)
    headers = request.view == monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.HEADERS
    key_src = monitoring_v3.ListTimeSeriesRequest(request)
    key_src.page_token = ""
    key_src.page_size = 0
    key = hashlib.sha256(monitoring_v3.ListTimeSeriesRequest.serialize(key_src)).hexdigest()[:16]
    start, stop, token = _page(len(series), request.page_size, request.page_token, key)
    return monitoring_v3.ListTimeSeriesResponse(
        time_series=[_to_proto(s, headers) for s in series[start:stop]],
        next_page_token=token,
    )


def handlers(store: MetricStore) -> ServiceHandler:
    """The generic handler serving ``google.monitoring.v3.MetricService`` from ``store``."""
    from google.cloud import monitoring_v3

    async def list_time_series_rpc(request: Any, _ctx: grpc.aio.ServicerContext) -> Any:
        return list_time_series(store, request)

    return generic_handler(
        SERVICE,
        [
            (
                "ListTimeSeries",
                list_time_series_rpc,
                monitoring_v3.ListTimeSeriesRequest,
                monitoring_v3.ListTimeSeriesResponse,
            )
        ],
    )
