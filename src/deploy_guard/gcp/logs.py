"""Cloud Logging evidence: one query per pass, every rule's patterns in one filter.

Cloud Logging's read quota is small (60 to 120 ``entries.list`` calls a minute
per project, shared with every console user), so the guard never issues one
query per pattern. Each evidence pass sends ONE ``ListLogEntries`` whose filter
is the candidate's scope, a ``timestamp>=`` bound (unbounded queries can hang),
and the OR of every logs rule's clause::

    resource.type="cloud_run_revision" AND resource.labels.service_name="chat"
    AND resource.labels.revision_name="chat-00002-abc"
    AND timestamp>="2026-11-25T18:00:00Z"
    AND ((severity>=ERROR AND (textPayload=~"close code 1011" OR jsonPayload.message=~...)) OR ...)

and then counts each rule's patterns client-side, in a
:class:`~deploy_guard.analysis.window.WindowCounter` (pure, bounded memory: a
step or a long watch keeps a bounded number of buckets and ids). Passes are
incremental: each one re-reads only the last minute before the newest entry
already seen (Cloud Logging's ingestion delay), and the counter counts each
``insertId`` once. The baseline revisions (for ``relative_to_baseline``) are in
the same query, so they are counted over the same window as the candidate.

Cloud Logging may answer a page with no entries and a ``next_page_token``: "the
search found no log entries so far but it did not have time to search all the
possible log entries" (``google/logging/v2/logging.proto``). That is never "no
entries": the reader keeps paging (such pages have a bound of their own,
``max_empty_pages``), and a last pass that stops with a token left is an
error (the counts are incomplete), never a pass.

When the logs rules have different filter fragments, an entry that one rule's
clause brought in must not count for another: each rule's fragment is then
evaluated again client-side on the entry, with the same parser that validated
it when the policy was loaded (:mod:`deploy_guard.logfilter`). When they share
one fragment (the usual case) the server's answer is already exact and no
entry is converted for that.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from deploy_guard import traces
from deploy_guard.analysis.window import WindowCounter
from deploy_guard.errors import GuardError
from deploy_guard.gcp.clients import Clients
from deploy_guard.gcp.errors import call
from deploy_guard.gcp.source import RevisionSource
from deploy_guard.logfilter import Filter, parse
from deploy_guard.measurements import LogMeasurement

if TYPE_CHECKING:  # pragma: no cover
    from deploy_guard.policy.model import Rule

#: Budget for Cloud Logging's ingestion delay: each pass re-reads this far back.
INGESTION_OVERLAP = timedelta(seconds=60)
SAMPLES_PER_RULE = 3
_SEVERITIES = ["DEFAULT", "DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL", "ALERT"]
_SEVERITIES.append("EMERGENCY")


class LogSource(Protocol):
    """Gives the judge one snapshot per logs rule per pass.

    ``deadline`` bounds a pass's API calls, retries included (None: the
    source's own bound).
    """

    async def measure(
        self, *, complete: bool, deadline: float | None = None
    ) -> list[LogMeasurement]: ...


class NoLogs:
    """Stands in when a policy has no logs rules: no query, no measurement."""

    async def measure(
        self, *, complete: bool, deadline: float | None = None
    ) -> list[LogMeasurement]:
        return []


def quote(text: str) -> str:
    """A Logging filter string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def pattern_clause(pattern: str) -> str:
    q = quote(pattern)
    return f"textPayload=~{q} OR jsonPayload.message=~{q}"


def rule_clause(fragment: str | None, patterns: Sequence[str]) -> str:
    """One rule's part of the filter: its fragment AND any of its patterns."""
    parts = []
    if fragment and fragment.strip():
        parts.append(f"({fragment.strip()})")
    if patterns:
        parts.append("(" + " OR ".join(pattern_clause(p) for p in patterns) + ")")
    return "(" + " AND ".join(parts) + ")" if parts else ""


def build_filter(
    *,
    service: str,
    revisions: Sequence[str],
    since: datetime,
    clauses: Sequence[str],
) -> str:
    """The one server-side filter of an evidence pass."""
    if len(revisions) == 1:
        scope_rev = f"resource.labels.revision_name={quote(revisions[0])}"
    else:
        scope_rev = (
            "(" + " OR ".join(f"resource.labels.revision_name={quote(r)}" for r in revisions) + ")"
        )
    terms = [
        'resource.type="cloud_run_revision"',
        f"resource.labels.service_name={quote(service)}",
        scope_rev,
        f"timestamp>={quote(rfc3339(since))}",
    ]
    wanted = [c for c in clauses if c]
    if wanted and len(wanted) == len(clauses):  # a rule with no clause wants every entry
        terms.append("(" + " OR ".join(wanted) + ")")
    return " AND ".join(terms)


@dataclass(frozen=True)
class Entry:
    """The parts of a log entry the guard counts and quotes."""

    key: str
    revision: str
    timestamp: datetime
    severity: str
    text: str
    #: The entry in the Logging filter language's camelCase form, for rules whose
    #: fragments must be evaluated client-side; None when none need it.
    doc: dict[str, Any] | None = None


class Tally(NamedTuple):
    """What one count is of: a rule's pattern (``*``: its filter), on one side."""

    rule: str
    pattern: str
    baseline: bool


#: The candidate's entries the query returned, whatever rule they matched.
SCANNED = Tally("", "", False)


def severity_name(value: Any) -> str:
    """``LogSeverity`` as its name, whether the client hands an enum or a bare int (500)."""
    name = getattr(value, "name", None)
    if isinstance(name, str) and name in _SEVERITIES:
        return name
    try:
        number = int(value)
    except (TypeError, ValueError):
        return str(value).upper()
    return _SEVERITIES[min(max(number // 100, 0), len(_SEVERITIES) - 1)]


def to_entry(raw: Any, *, keep_doc: bool = False) -> Entry:
    """Flatten a ``LogEntry`` (proto-plus) into an :class:`Entry`.

    ``keep_doc`` also keeps the whole entry as the filter language sees it
    (``textPayload``, ``jsonPayload.message``, ``httpRequest.status``, ...).
    """
    text = raw.text_payload or ""
    if not text and raw.json_payload:
        payload = dict(raw.json_payload)
        text = str(payload.get("message", "") or "")
    ts = raw.timestamp
    when = ts if isinstance(ts, datetime) else datetime.now(UTC)
    severity = severity_name(raw.severity)
    key = raw.insert_id or f"{when.isoformat()}|{text}"
    return Entry(
        key=key,
        revision=raw.resource.labels.get("revision_name", ""),
        timestamp=when,
        severity=severity,
        text=text,
        doc=type(raw).to_dict(raw, preserving_proto_field_name=False) if keep_doc else None,
    )


class RuleMatcher:
    """Which logs rules an entry counts for, and by which of their patterns.

    One query serves every rule, so a rule whose own filter fragment differs
    from the others' re-checks it on each entry (``keep_doc``: entries must
    carry their filter-language form). Shared by the pass-by-pass source here
    and the live one (:mod:`deploy_guard.gcp.livecount`).
    """

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = list(rules)
        self._compiled = {
            r.name: [(p, re.compile(p)) for p in (r.logs.patterns if r.logs else [])]
            for r in self.rules
        }
        fragments = {(r.logs.filter or "").strip() if r.logs else "" for r in self.rules}
        self._own: dict[str, Filter | None] = {
            r.name: parse(r.logs.filter)
            if len(fragments) > 1 and r.logs and r.logs.filter
            else None
            for r in self.rules
        }

    @property
    def keep_doc(self) -> bool:
        return any(self._own.values())

    def hits(self, entry: Entry) -> list[tuple[str, list[str]]]:
        """(rule, the patterns it matched: ``*`` for a rule without patterns) per rule
        whose own filter takes the entry; a rule with no hit has an empty list."""
        out: list[tuple[str, list[str]]] = []
        for rule in self.rules:
            own = self._own[rule.name]
            if own is not None and entry.doc is not None and not own.matches(entry.doc):
                continue
            compiled = self._compiled[rule.name]
            out.append(
                (
                    rule.name,
                    [p for p, rx in compiled if rx.search(entry.text)] if compiled else ["*"],
                )
            )
        return out


def entry_sample(entry: Entry) -> dict[str, Any]:
    """What a report shows of a matching entry."""
    return {
        "timestamp": entry.timestamp.isoformat(),
        "severity": entry.severity,
        "text": entry.text[:300],
    }


class CloudLogging(RevisionSource):
    """:class:`LogSource` over ``LoggingServiceV2Client.list_log_entries``.

    Takes :class:`RevisionSource`'s arguments, plus ``page_size`` (at most
    1,000), ``max_pages``, the bound on pages with entries read in one pass,
    and ``max_empty_pages``, the bound on empty pages that came with a token.
    """

    spec_field = "logs"

    def __init__(
        self,
        clients: Clients,
        *,
        page_size: int = 1000,
        max_pages: int = 5,
        max_empty_pages: int = 10,
        **scope: Any,
    ) -> None:
        super().__init__(clients, **scope)
        if not any(r.logs and r.logs.relative_to_baseline for r in self.rules):
            self.baseline = []  # read the baseline only for rules that compare with it
        self.page_size = min(page_size, 1000)
        self.max_pages = max_pages
        self.max_empty_pages = max_empty_pages
        #: Every entry counted once, by ``insertId``, in buckets from the window's start.
        self.counter: WindowCounter[Tally] = WindowCounter(origin=self.since.timestamp())
        self._newest: datetime | None = None
        self._samples: dict[str, list[dict[str, Any]]] = {r.name: [] for r in self.rules}
        self._truncated = False
        #: The last pass stopped at a bound with a next_page_token left: its search
        #: had not finished (too many entries, or pages the search left empty).
        self._unfinished = False
        self.matcher = RuleMatcher(self.rules)
        #: Filter text of every pass, for tests and ``--log-level debug``.
        self.filters: list[str] = []

    @staticmethod
    def _patterns(rule: Rule) -> list[str]:
        pats = list(rule.logs.patterns) if rule.logs else []
        return pats or ["*"]  # "*": every entry the rule's fragment selects

    def current_filter(self) -> str:
        start = self.since
        if self._newest is not None:
            # Caught up: look back over the ingestion delay. Behind (the last pass hit
            # its page bound): continue from the newest entry, or we would re-read
            # the same first pages forever.
            back = timedelta(0) if self._truncated else INGESTION_OVERLAP
            start = max(self.since, self._newest - back)
        clauses = [
            rule_clause(r.logs.filter if r.logs else None, self._patterns_or_none(r))
            for r in self.rules
        ]
        return build_filter(
            service=self.service,
            revisions=[self.revision, *self.baseline],
            since=start,
            clauses=clauses,
        )

    @staticmethod
    def _patterns_or_none(rule: Rule) -> list[str]:
        return list(rule.logs.patterns) if rule.logs else []

    async def measure(
        self, *, complete: bool, deadline: float | None = None
    ) -> list[LogMeasurement]:
        """One pass: query, count, and hand back a cumulative snapshot per rule."""
        if not self.rules:
            return []
        flt = self.current_filter()
        self.filters.append(flt)
        try:
            entries = await asyncio.to_thread(self._fetch, flt, deadline)
        except GuardError as exc:
            counts = self.counter.counts()
            return [
                self._snapshot(r, counts, complete=complete, error=str(exc)) for r in self.rules
            ]
        for entry in entries:
            self._count(entry)
        error = None
        if complete and self._unfinished:
            error = (
                f"Cloud Logging had not finished searching the logs of {self.revision}: the "
                "last page read still came with a next_page_token (its search ran out of "
                "time, or more entries matched than a pass reads), so the counts are "
                "incomplete; run the check again, or narrow the rules' filters"
            )
        counts = self.counter.counts()  # everything since the window's start
        return [self._snapshot(r, counts, complete=complete, error=error) for r in self.rules]

    def _fetch(self, flt: str, deadline: float | None = None) -> list[Entry]:
        client = self.clients.logging()
        bound = self.bound(deadline)
        request = {
            "resource_names": [f"projects/{self.project}"],
            "filter": flt,
            "order_by": "timestamp asc",
            "page_size": self.page_size,
        }

        def fetch(retry: Any) -> list[Entry]:
            # The first page is the call that ``call`` counts; each later page
            # is another ListLogEntries against the quota, so count it too.
            pager = client.list_log_entries(request=request, retry=retry, timeout=bound)
            out: list[Entry] = []
            self._truncated = self._unfinished = False
            full = empty = 0
            keep_doc = self.matcher.keep_doc
            for n, page in enumerate(pager.pages):
                if n:
                    self.calls.add("logging", "ListLogEntries")
                more = bool(page.next_page_token)
                if not page.entries and more:
                    # The search ran out of time, not out of entries: go on.
                    empty += 1
                    if empty >= self.max_empty_pages:
                        self._unfinished = True
                        break
                    continue
                out.extend(to_entry(e, keep_doc=keep_doc) for e in page.entries)
                full += 1
                if full >= self.max_pages:
                    self._truncated = self._unfinished = more
                    break
            return out

        return call(
            fetch,
            api="logging",
            what=f"reading logs of {self.revision}",
            calls=self.calls,
            method="ListLogEntries",
            deadline=bound,
        )

    def _count(self, entry: Entry) -> None:
        is_candidate = entry.revision == self.revision or not entry.revision
        tallies = [SCANNED] if is_candidate else []
        matched: list[str] = []  # the rules the entry counts for
        for name, hits in self.matcher.hits(entry):
            tallies.extend(Tally(name, p, not is_candidate) for p in hits)
            if hits:
                matched.append(name)
        if not self.counter.add(entry.key, entry.timestamp.timestamp(), tallies):
            return  # counted in an earlier pass
        if self._newest is None or entry.timestamp > self._newest:
            self._newest = entry.timestamp
        if not is_candidate:
            return
        for name in matched:
            samples = self._samples[name]
            if len(samples) < SAMPLES_PER_RULE:
                samples.append(entry_sample(entry))
            traces.log_match(
                name,
                entry.timestamp,
                severity=entry.severity,
                text=entry.text,
                revision=self.revision,
            )

    def _snapshot(
        self, rule: Rule, counts: Counter[Tally], *, complete: bool, error: str | None = None
    ) -> LogMeasurement:
        patterns = self._patterns(rule)
        window = max(0.0, (self.now() - self.since).total_seconds())
        return LogMeasurement(
            rule=rule.name,
            entries_scanned=counts[SCANNED],
            matches={p: counts[Tally(rule.name, p, False)] for p in patterns},
            window_seconds=window,
            baseline_matches=(
                {p: counts[Tally(rule.name, p, True)] for p in patterns} if self.baseline else None
            ),
            baseline_window_seconds=window if self.baseline else None,
            samples=tuple(self._samples[rule.name]),
            complete=complete,
            error=error,
        )
