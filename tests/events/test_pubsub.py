"""``kind: pubsub`` against Google's real Pub/Sub emulator (``gcloud beta emulators pubsub``).

The notifier finds the emulator the way the client library does, through
``PUBSUB_EMULATOR_HOST``; the test reads what arrived with a real subscription.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import jsonschema
import pytest

from deploy_guard.events.delivery import Bounds
from deploy_guard.events.fanout import Channel, Notifiers
from deploy_guard.events.google import PubSubNotifier
from deploy_guard.events.model import Delivery, Event
from deploy_guard.events.payload import SCHEMA, schema
from pubsub_emulator import PROJECT
from report.samples import CANDIDATE, check_report

FAST = Bounds(attempt_timeout=10.0, attempts=2, backoff=0.01, backoff_max=0.02, total=30.0)
_names = itertools.count()


@pytest.fixture
def topic(pubsub_host: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """A fresh topic with a subscription on it: (topic, subscription)."""
    from google.cloud.pubsub_v1 import PublisherClient, SubscriberClient

    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_host)
    n = next(_names)
    topic = f"projects/{PROJECT}/topics/deploys-{n}"
    subscription = f"projects/{PROJECT}/subscriptions/all-{n}"
    PublisherClient().create_topic(name=topic)
    with SubscriberClient() as subscriber:
        subscriber.create_subscription(name=subscription, topic=topic)
    return topic, subscription


def pull(subscription: str, count: int) -> list[Any]:
    from google.cloud.pubsub_v1 import SubscriberClient

    got: list[Any] = []
    with SubscriberClient() as subscriber:
        for _ in range(50):
            answer = subscriber.pull(subscription=subscription, max_messages=10, timeout=10)
            got += [m.message for m in answer.received_messages]
            if answer.received_messages:
                subscriber.acknowledge(
                    subscription=subscription, ack_ids=[m.ack_id for m in answer.received_messages]
                )
            if len(got) >= count:
                break
    return got


async def publish(notifier: PubSubNotifier, *events: Event) -> list[Delivery]:
    done: list[Delivery] = []
    fan = Notifiers([Channel(notifier, frozenset(e.kind for e in events))], bounds=FAST)
    for ev in events:
        fan.fire(ev, check_report().to_dict(), done.append)
    await fan.drain()
    return done


async def test_the_payload_is_published_with_attributes_to_filter_on(
    topic: tuple[str, str],
) -> None:
    name, subscription = topic
    rollback = Event("rollback", "check", "chat", CANDIDATE, outcome=True)
    step = Event("step", "rollout", "chat", CANDIDATE, detail={"step": 1, "percent": 10})
    done = await publish(PubSubNotifier(name, bounds=FAST), rollback, step)
    assert [(d.notifier, d.status, d.attempts) for d in done] == [
        (f"pubsub ({name})", "delivered", 1),
        (f"pubsub ({name})", "delivered", 1),
    ], done
    messages = pull(subscription, 2)
    by_kind = {m.attributes["kind"]: m for m in messages}
    assert set(by_kind) == {"rollback", "step"}
    message = by_kind["rollback"]
    payload = json.loads(message.data)
    jsonschema.validate(payload, schema())
    assert payload["id"] == rollback.id
    assert payload["exit_code"] == 1
    assert dict(message.attributes) == {
        "kind": "rollback",
        "command": "check",
        "service": "chat",
        "revision": CANDIDATE,
        "verdict": "fail",
        "project": "p",
        "schema": SCHEMA,
    }
    assert json.loads(by_kind["step"].data)["detail"] == {"step": 1, "percent": 10}


@pytest.mark.fault("notify", "Pub/Sub topic does not exist", "failed at once (NOT_FOUND), says so")
async def test_a_topic_that_does_not_exist_is_a_failed_delivery_not_retried(
    pubsub_host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_host)
    name = f"projects/{PROJECT}/topics/nobody-made-this"
    ev = Event("fail", "check", "chat", CANDIDATE, outcome=True)
    (delivery,) = await publish(PubSubNotifier(name, bounds=FAST), ev)
    assert delivery.status == "failed"
    assert delivery.attempts == 1
    assert delivery.error.startswith("publish: NOT_FOUND"), delivery.error
