"""``kind: google_chat``: a Google Chat incoming webhook's message as a card (cards v2).

The same facts as Slack's message, in a card: the header (outcome and service,
the outcome line as subtitle), the facts as decorated text, the reasons and the
traffic as paragraphs, a button to the report. Card text takes a small subset
of HTML, so run text (log lines, close reasons) is HTML-escaped.
"""

from __future__ import annotations

import html
from typing import Any

from deploy_guard.events.http import HttpNotifier, json_body
from deploy_guard.events.message import Message, message
from deploy_guard.events.model import Event


def _paragraph(lines: list[str]) -> dict[str, Any]:
    return {"textParagraph": {"text": "<br>".join(html.escape(line) for line in lines)}}


def card(msg: Message, card_id: str) -> dict[str, Any]:
    """The webhook's JSON body for ``msg``."""
    sections: list[dict[str, Any]] = [
        {
            "widgets": [
                {"decoratedText": {"topLabel": label, "text": html.escape(value)}}
                for label, value in msg.facts
            ]
        }
    ]
    if msg.reasons:
        sections.append(
            {"header": "Why", "widgets": [_paragraph([f"\u2022 {r}" for r in msg.reasons])]}
        )
    if msg.traffic:
        sections.append({"header": "Traffic", "widgets": [_paragraph(msg.traffic)]})
    closing: list[dict[str, Any]] = []
    if msg.report_url:
        link = {"openLink": {"url": msg.report_url}}
        closing.append({"buttonList": {"buttons": [{"text": "Open the report", "onClick": link}]}})
    closing.append(_paragraph([msg.footer]))
    sections.append({"widgets": closing})
    return {
        "text": msg.title,
        "cardsV2": [
            {
                "cardId": card_id,
                "card": {
                    "header": {"title": msg.title, "subtitle": msg.summary},
                    "sections": sections,
                },
            }
        ],
    }


class GoogleChatNotifier(HttpNotifier):
    """Posts cards to a Google Chat space's incoming webhook."""

    kind = "google_chat"

    def render(self, event: Event, payload: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
        body = card(message(payload), f"deploy-guard-{event.id}")
        return json_body(body), {"Content-Type": "application/json; charset=UTF-8"}
