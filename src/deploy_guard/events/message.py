"""What a chat message says, whatever the chat: one :class:`Message` from a payload.

Slack (:mod:`~deploy_guard.events.slack`) and Google Chat
(:mod:`~deploy_guard.events.google_chat`) draw the same facts in their own
markup, so both say the same thing in the same order, sized for a phone: a
heading with the outcome and the service, the verdict, revision and action, up
to five reasons with their counts, the traffic before and after, and a link to
the report. The text here is plain: each renderer escapes it for its markup
(log lines and close reasons quoted in a reason are not trusted).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from deploy_guard.report.cloud_deploy import phase_line

#: Reasons shown in a message; the rest are counted ("and 3 more").
MAX_REASONS = 5
#: A reason longer than this is cut (a phone shows a few lines per reason).
MAX_REASON_CHARS = 300

_HEADINGS = {
    "fail": ("\u274c", "Failed"),
    "rollback": ("\u23ea", "Rolled back"),
    "rollback_failed": ("\U0001f6a8", "Rollback failed"),
    "inconclusive": ("\u2754", "Inconclusive"),
    "promote": ("\u2705", "Promoted"),
    "pass": ("\u2705", "Passed"),
    "step": ("\u27a1\ufe0f", "Step passed"),
    "watch_degraded": ("\u26a0\ufe0f", "Watch degraded"),
    "error": ("\U0001f6d1", "Needs a human"),
}


@dataclass(frozen=True)
class Message:
    """A chat message's parts, in plain text."""

    #: ``"⏪ Rolled back: chat-agent"``.
    title: str
    #: The outcome in one line (the report's message).
    summary: str
    #: ``(label, value)`` pairs shown side by side: verdict, revision, action, where.
    facts: list[tuple[str, str]]
    reasons: list[str]
    #: ``before: a 100%`` / ``after: a 90%, b 10%``; empty when nothing is known.
    traffic: list[str]
    report_url: str | None
    #: ``deploy-guard check · 2026-05-04T03:12:09Z``.
    footer: str
    #: The notification's one-line form (Slack's ``text``: notifications and screen readers).
    fallback: str = field(default="")


def split_text(split: dict[str, Any]) -> str:
    """``{"a": 90, "b": 10}`` as ``a 90%, b 10%`` (largest share first)."""
    ordered = sorted(split.items(), key=lambda kv: (-int(kv[1]), kv[0]))
    return ", ".join(f"{rev} {pct}%" for rev, pct in ordered) or "nothing"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _reasons(payload: dict[str, Any]) -> list[str]:
    reasons = [str(r) for r in payload.get("reasons", ()) if str(r).strip()]
    if not reasons:  # the failing rules' own words
        reasons = [
            f"{r['rule']}: {r['counts'] or r['status']}"
            for r in payload.get("rules", ())
            if r.get("status") in ("fail", "warn", "error", "no_data")
        ]
    detail = payload.get("detail", {})
    if payload.get("kind") == "watch_degraded" and detail.get("why"):
        reasons = [str(detail["why"])]
    shown = [_cut(r, MAX_REASON_CHARS) for r in reasons[:MAX_REASONS]]
    if len(reasons) > MAX_REASONS:
        shown.append(f"and {len(reasons) - MAX_REASONS} more (see the report)")
    return shown


def message(payload: dict[str, Any]) -> Message:
    """The message for one payload (:func:`deploy_guard.events.payload.build`)."""
    kind = str(payload.get("kind", ""))
    icon, heading = _HEADINGS.get(kind, ("", kind))
    service = str(payload.get("service") or "?")
    title = f"{icon} {heading}: {service}".strip()
    detail = payload.get("detail", {})
    if kind == "step" and "step" in detail:
        title = f"{title} (step {detail['step']}, {detail.get('percent', '?')}%)"
    action = str(payload.get("action", ""))
    code = payload.get("exit_code")
    facts = [
        ("Verdict", str(payload.get("verdict") or "?")),
        ("Revision", str(payload.get("revision") or "?")),
        ("Action", f"{action} (exit {code})" if code is not None else action or "none"),
        ("Where", " / ".join(x for x in (payload.get("project"), payload.get("region")) if x)),
    ]
    if phase := phase_line(payload.get("cloud_deploy")):
        facts.append(("Cloud Deploy", phase))
    facts = [(label, value) for label, value in facts if value]
    traffic = []
    before, after = payload.get("traffic_before") or {}, payload.get("traffic_after") or {}
    if before:
        traffic.append(f"before: {split_text(before)}")
    if after:
        traffic.append(f"after: {split_text(after)}")
    summary = _cut(str(payload.get("message") or ""), MAX_REASON_CHARS)
    command = str(payload.get("command", ""))
    footer = f"deploy-guard {command} \u00b7 {payload.get('at', '')}"
    fallback = f"{title}: {payload.get('revision', '')}" + (f": {summary}" if summary else "")
    return Message(
        title=_cut(title, 150),
        summary=summary,
        facts=facts,
        reasons=_reasons(payload),
        traffic=traffic,
        report_url=payload.get("report_url"),
        footer=footer,
        fallback=_cut(fallback, 400),
    )
