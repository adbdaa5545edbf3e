"""``kind: slack``: an incoming webhook's message in Block Kit.

Laid out for a phone: a header (outcome and service), the outcome line, the
facts two by two (verdict, revision, action, where), the reasons as bullets,
the traffic before and after, a button to the report, and a grey footer.

Text from the run (reasons quote log lines and close reasons written by the
service under test) is escaped for Slack's mrkdwn: ``&``, ``<`` and ``>``
become entities, so ``<!channel>`` or ``<https://evil|click>`` in a log line is
shown as typed, never as a mention or a link.
"""

from __future__ import annotations

from typing import Any

from deploy_guard.events.http import HttpNotifier, json_body
from deploy_guard.events.message import Message, message
from deploy_guard.events.model import Event

#: Slack's limits: a section's text, a header's text.
SECTION_MAX = 3000
HEADER_MAX = 150


def escape(text: str) -> str:
    """``text`` safe in mrkdwn (Slack's own three entities)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _section(text: str) -> dict[str, Any]:
    if len(text) > SECTION_MAX:
        text = text[: SECTION_MAX - 1] + "\u2026"
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def blocks(msg: Message) -> dict[str, Any]:
    """The webhook's JSON body for ``msg``."""
    out: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": msg.title[:HEADER_MAX]}},
    ]
    if msg.summary:
        out.append(_section(escape(msg.summary)))
    out.append(
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*{label}*\n{escape(value)}"}
                for label, value in msg.facts
            ],
        }
    )
    if msg.reasons:
        out.append(_section("*Why*\n" + "\n".join(f"\u2022 {escape(r)}" for r in msg.reasons)))
    if msg.traffic:
        out.append(_section("*Traffic*\n" + "\n".join(escape(t) for t in msg.traffic)))
    if msg.report_url:
        out.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Open the report"},
                        "url": msg.report_url,
                    }
                ],
            }
        )
    out.append({"type": "context", "elements": [{"type": "mrkdwn", "text": escape(msg.footer)}]})
    return {"text": escape(msg.fallback), "blocks": out}


class SlackNotifier(HttpNotifier):
    """Posts Block Kit messages to a Slack incoming webhook."""

    kind = "slack"

    def render(self, event: Event, payload: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
        return json_body(blocks(message(payload))), {}
