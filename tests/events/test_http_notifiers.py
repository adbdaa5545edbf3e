"""Slack, Google Chat and the webhook against a real local receiver: shapes, signature, retries.

Every receiver is :class:`receivers.Receiver`, a real HTTP server on 127.0.0.1
that records each request (path, headers, body) before answering it by script.
Bounds are small so that the retry tests are quick; no assertion is about time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from deploy_guard.events.delivery import Bounds
from deploy_guard.events.fanout import Channel, Notifiers
from deploy_guard.events.google_chat import GoogleChatNotifier
from deploy_guard.events.model import Delivery, Event
from deploy_guard.events.payload import SCHEMA, schema
from deploy_guard.events.slack import SlackNotifier
from deploy_guard.events.webhook import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    WebhookNotifier,
    verify,
)
from receivers import Receiver, dead_url
from report.samples import CANDIDATE, check_report

KEY = "k3y-for-signing-the-webhook-0123456789"
FAST = Bounds(attempt_timeout=0.5, attempts=3, backoff=0.01, backoff_max=0.02, total=10.0)
#: What a hostile service can put in a log line the report quotes.
HOSTILE = "<!channel> <https://evil.example|click me> & <b>bold</b>"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def report(**changes: Any) -> dict[str, Any]:
    doc = check_report().to_dict()
    doc.update(changes)
    return doc


def event(kind: str = "rollback", **detail: Any) -> Event:
    return Event(kind, "check", "chat", CANDIDATE, detail=detail, outcome=True)


async def deliver(notifier: Any, ev: Event, doc: dict[str, Any]) -> Delivery:
    """One event through a one-channel fan-out, drained: its delivery."""
    done: list[Delivery] = []
    fan = Notifiers([Channel(notifier, frozenset({ev.kind}))], bounds=FAST)
    fan.fire(ev, doc, done.append)
    await fan.drain()
    assert len(done) == 1
    return done[0]


async def test_the_webhook_posts_the_versioned_payload_signed(receiver: Receiver) -> None:
    hook = WebhookNotifier("webhook (HOOK)", receiver.url, bounds=FAST, secret=KEY)
    ev = event("rollback")
    delivery = await deliver(hook, ev, report())
    assert delivery.ok, delivery
    assert delivery.attempts == 1
    (request,) = receiver.requests
    payload = request.json()
    jsonschema.validate(payload, schema())
    assert payload["schema"] == SCHEMA
    assert (payload["kind"], payload["id"], payload["revision"]) == ("rollback", ev.id, CANDIDATE)
    assert payload["exit_code"] == 1  # the sample report's outcome
    assert payload["reasons"]
    assert payload["traffic_before"]
    assert request.headers[EVENT_HEADER] == "rollback"
    assert request.headers[DELIVERY_HEADER] == ev.id
    assert request.headers["Content-Type"] == "application/json"
    signed = request.headers[SIGNATURE_HEADER]
    assert verify(request.body, signed, KEY)
    # ...and nothing else verifies: another key, another body, a replay later on
    assert not verify(request.body, signed, KEY + "x")
    assert not verify(request.body.replace(b"rollback", b"promote"), signed, KEY)
    assert not verify(request.body, signed, KEY, now=time.time() + 301)
    assert not verify(request.body, "v1=deadbeef", KEY)


async def test_an_unsigned_webhook_has_no_signature_header(receiver: Receiver) -> None:
    hook = WebhookNotifier("webhook (HOOK)", receiver.url, bounds=FAST)
    assert (await deliver(hook, event(), report())).ok
    assert SIGNATURE_HEADER not in receiver.requests[0].headers


async def test_a_mid_run_event_has_no_exit_code_yet(receiver: Receiver) -> None:
    hook = WebhookNotifier("webhook (HOOK)", receiver.url, bounds=FAST)
    step = Event("step", "rollout", "chat", CANDIDATE, detail={"step": 1, "percent": 10})
    assert (await deliver(hook, step, report())).ok
    payload = receiver.requests[0].json()
    jsonschema.validate(payload, schema())
    assert payload["exit_code"] is None
    assert payload["detail"] == {"step": 1, "percent": 10}


def test_the_published_schema_is_the_one_the_payload_is_built_from() -> None:
    """``docs/notification.schema.json`` is ``deploy-guard notify schema``'s output."""
    path = Path(__file__).resolve().parents[2] / "docs" / "notification.schema.json"
    assert json.loads(path.read_text()) == schema()


@pytest.mark.fault("notify", "webhook answers 500, then 503", "retried; delivered at attempt 3")
async def test_a_receiver_that_fails_for_a_while_gets_the_event_on_a_retry() -> None:
    with Receiver([500, 503, 200]) as receiver:
        hook = WebhookNotifier("webhook (HOOK)", receiver.url, bounds=FAST, secret=KEY)
        delivery = await deliver(hook, event(), report())
        assert delivery.ok, delivery
        assert delivery.attempts == 3
        ids = {r.json()["id"] for r in receiver.requests}
        assert len(receiver.requests) == 3
        assert len(ids) == 1  # one event: the receiver can drop what it already has
        assert all(verify(r.body, r.headers[SIGNATURE_HEADER], KEY) for r in receiver.requests)


@pytest.mark.fault("notify", "webhook refuses the payload (400)", "failed, not retried, says why")
async def test_a_refusal_is_not_retried_and_its_words_are_kept() -> None:
    with Receiver([400], body="invalid_payload") as receiver:
        hook = SlackNotifier("slack (SLACK_URL)", receiver.url, bounds=FAST)
        delivery = await deliver(hook, event(), report())
        assert delivery.status == "failed"
        assert delivery.attempts == 1
        assert delivery.error == "HTTP 400: invalid_payload"
        assert len(receiver.requests) == 1


@pytest.mark.fault("notify", "webhook never answers", "each attempt timed out; given up")
async def test_a_receiver_that_never_answers_is_given_up_after_the_attempts() -> None:
    with Receiver(["hang"]) as receiver:
        hook = WebhookNotifier("webhook (HOOK)", receiver.url, bounds=FAST)
        bounds = Bounds(attempt_timeout=0.2, attempts=3, backoff=0.01, backoff_max=0.02)
        hook.bounds = bounds
        delivery = await deliver(hook, event(), report())
        assert delivery.status == "failed"
        assert delivery.attempts == 3
        assert delivery.error == "no answer within 0.2s"
        assert len(receiver.requests) == 3


@pytest.mark.fault("notify", "nothing listens at the webhook's URL", "failed: could not connect")
async def test_a_receiver_that_is_gone_is_a_failed_delivery_that_names_no_url() -> None:
    url = dead_url()
    delivery = await deliver(WebhookNotifier("webhook (HOOK)", url, bounds=FAST), event(), report())
    assert delivery.status == "failed"
    assert delivery.attempts == 3
    assert delivery.error == "could not connect to the receiver"
    assert "127.0.0.1" not in json.dumps(delivery.as_dict())


@pytest.mark.fault("notify", "webhook answers with a redirect", "not followed; failed")
async def test_a_redirect_is_not_followed() -> None:
    with Receiver([302]) as receiver:
        hook = WebhookNotifier("webhook (HOOK)", receiver.url, bounds=FAST)
        delivery = await deliver(hook, event(), report())
        assert delivery.error == "HTTP 302: redirects are not followed"
        assert len(receiver.requests) == 1


async def test_slack_gets_block_kit_with_the_verdict_reasons_traffic_and_link(
    receiver: Receiver,
) -> None:
    hook = SlackNotifier("slack (SLACK_URL)", receiver.url, bounds=FAST, report_url="https://r/1")
    doc = report(reasons=["chat-golden-path: 4 of 4 sessions closed with 1011, limit 0", HOSTILE])
    assert (await deliver(hook, event(), doc)).ok
    message = receiver.requests[0].json()
    blocks = message["blocks"]
    assert blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "\u23ea Rolled back: chat"},
    }
    fields = next(b["fields"] for b in blocks if "fields" in b)
    facts = {f["text"].split("\n")[0]: f["text"].split("\n")[1] for f in fields}
    assert facts["*Verdict*"] == "fail"
    assert facts["*Revision*"] == CANDIDATE
    assert facts["*Action*"].endswith("(exit 1)")
    texts = [b["text"]["text"] for b in blocks if b["type"] == "section" and "text" in b]
    why = next(t for t in texts if t.startswith("*Why*"))
    assert "\u2022 chat-golden-path: 4 of 4 sessions closed with 1011, limit 0" in why
    # a log line's markup is shown as typed: no @channel, no disguised link
    assert "&lt;!channel&gt; &lt;https://evil.example|click me&gt; &amp;" in why
    assert "<!channel>" not in json.dumps(message)
    traffic = next(t for t in texts if t.startswith("*Traffic*"))
    assert "before: chat-00001-aaa 90%, chat-00002-bbb 10%\nafter: chat-00001-aaa 100%" in traffic
    button = next(b for b in blocks if b["type"] == "actions")["elements"][0]
    assert button["url"] == "https://r/1"
    assert message["text"].startswith("\u23ea Rolled back: chat")


async def test_google_chat_gets_a_card_with_the_same_facts_html_escaped(
    receiver: Receiver,
) -> None:
    hook = GoogleChatNotifier("google_chat (CHAT_URL)", receiver.url, bounds=FAST)
    ev = event("fail")
    assert (await deliver(hook, ev, report(reasons=[HOSTILE]))).ok
    message = receiver.requests[0].json()
    (card,) = message["cardsV2"]
    assert card["cardId"] == f"deploy-guard-{ev.id}"
    assert card["card"]["header"]["title"] == "\u274c Failed: chat"
    sections = card["card"]["sections"]
    facts = {
        w["decoratedText"]["topLabel"]: w["decoratedText"]["text"] for w in sections[0]["widgets"]
    }
    assert facts["Verdict"] == "fail"
    assert facts["Revision"] == CANDIDATE
    why = next(s for s in sections if s.get("header") == "Why")
    text = why["widgets"][0]["textParagraph"]["text"]
    assert "&lt;b&gt;bold&lt;/b&gt;" in text
    assert "<b>" not in text
    assert not any(s.get("header") == "Report" for s in sections)  # no --report-url given
