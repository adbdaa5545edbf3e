"""The fan-out: who hears of what, concurrently, and nothing when nothing is configured."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from deploy_guard.events.delivery import Bounds
from deploy_guard.events.fanout import Channel, Notifiers
from deploy_guard.events.model import Delivery, Event, outcome_kind
from deploy_guard.events.notifier import NoNotifier
from deploy_guard.events.webhook import WebhookNotifier
from receivers import Receiver
from waiting import eventually

FAST = Bounds(attempt_timeout=5.0, attempts=1, backoff=0.01, backoff_max=0.02, total=10.0)


def event(kind: str) -> Event:
    return Event(kind, "check", "chat", "chat-00002-bbb", outcome=True)


async def test_each_notifier_hears_only_the_events_it_asked_for() -> None:
    with Receiver() as failures, Receiver() as everything:
        fan = Notifiers(
            [
                Channel(
                    WebhookNotifier("failures", failures.url, bounds=FAST), frozenset({"fail"})
                ),
                Channel(
                    WebhookNotifier("all", everything.url, bounds=FAST),
                    frozenset({"fail", "promote"}),
                ),
            ],
            bounds=FAST,
        )
        done: list[Delivery] = []
        fan.fire(event("promote"), {"exit_code": 0}, done.append)
        fan.fire(event("fail"), {"exit_code": 1}, done.append)
        fan.fire(event("step"), {"exit_code": 0}, done.append)  # nobody asked
        await fan.drain()
        assert sorted((d.notifier, d.event) for d in done) == [
            ("all", "fail"),
            ("all", "promote"),
            ("failures", "fail"),
        ]
        assert [r.json()["kind"] for r in failures.requests] == ["fail"]
        assert sorted(r.json()["kind"] for r in everything.requests) == ["fail", "promote"]


@pytest.mark.fault("notify", "one receiver hangs, another answers", "the other is delivered first")
async def test_a_hanging_receiver_holds_up_neither_the_caller_nor_the_others() -> None:
    with Receiver(["hang"]) as stuck, Receiver() as fine:
        fan = Notifiers(
            [
                Channel(WebhookNotifier("stuck", stuck.url, bounds=FAST), frozenset({"fail"})),
                Channel(WebhookNotifier("fine", fine.url, bounds=FAST), frozenset({"fail"})),
            ],
            bounds=FAST,
        )
        done: list[Delivery] = []
        fan.fire(event("fail"), {"exit_code": 1}, done.append)  # returns at once
        assert fan.pending == 2
        await eventually(lambda: done, what="the answering receiver's delivery")
        assert [(d.notifier, d.status) for d in done] == [("fine", "delivered")]
        assert stuck.arrived.is_set()  # still held open by its receiver
        await fan.drain(within=0.2)  # the run is over: what is left is given up, and said
        assert [(d.notifier, d.status) for d in done] == [
            ("fine", "delivered"),
            ("stuck", "failed"),
        ]
        assert done[1].error == "cancelled: the run ended before it was delivered"


async def test_a_notifier_that_breaks_is_a_failed_delivery() -> None:
    class Broken:
        name = "broken"

        async def post(self, event: Event, report: dict[str, Any]) -> Delivery:
            raise RuntimeError("bug")

        async def aclose(self) -> None:
            return None

    done: list[Delivery] = []
    fan = Notifiers([Channel(Broken(), frozenset({"fail"}))])
    fan.fire(event("fail"), {}, done.append)
    await fan.drain()
    assert [(d.status, d.error) for d in done] == [("failed", "internal error: RuntimeError")]


async def test_with_nothing_configured_firing_does_nothing() -> None:
    fan = Notifiers.none()
    done: list[Delivery] = []
    fan.fire(event("rollback"), {}, done.append)
    assert fan.pending == 0
    assert not fan.wants("rollback")
    await fan.drain()
    assert done == []
    assert (await NoNotifier().post(event("fail"), {})).ok


async def test_drain_waits_for_deliveries_under_way() -> None:
    with Receiver() as receiver:
        fan = Notifiers(
            [Channel(WebhookNotifier("hook", receiver.url, bounds=FAST), frozenset({"fail"}))]
        )
        done: list[Delivery] = []
        fan.fire(event("fail"), {}, done.append)
        await asyncio.wait_for(fan.drain(), timeout=30)
        assert [d.status for d in done] == ["delivered"]


@pytest.mark.parametrize(
    ("command", "verdict", "action", "code", "tried", "kind"),
    [
        ("check", "fail", "rolled_back", 1, True, "rollback"),
        ("check", "fail", "none", 1, True, "fail"),  # the candidate held no traffic
        ("check", "fail", "none", 1, False, "fail"),  # dry run, on_fail: none
        ("check", "fail", "superseded", 4, True, "rollback_failed"),
        ("check", "fail", "unverified", 4, True, "rollback_failed"),
        ("check", "pass", "superseded", 4, False, "error"),  # a promotion refused
        ("check", "inconclusive", "failed", 4, False, "error"),  # an API read that failed
        ("check", "error", "none", 2, False, "error"),
        ("check", "pass", "promoted", 0, False, "promote"),
        ("check", "pass", "none", 0, False, "pass"),
        ("check", "warn", "none", 0, False, "pass"),
        ("check", "inconclusive", "none", 3, False, "inconclusive"),
        ("check", "inconclusive", "rolled_back", 3, True, "rollback"),  # on_inconclusive
        ("rollout", "pass", "promoted", 0, False, "promote"),
        ("watch", "fail", "rolled_back", 1, True, None),  # told when it happened
        ("watch", "pass", "none", 0, False, None),
        ("watch", "fail", "failed", 4, True, "rollback_failed"),
    ],
)
def test_a_run_ends_in_one_event_named_for_what_happened(
    command: str, verdict: str, action: str, code: int, tried: bool, kind: str | None
) -> None:
    assert outcome_kind(command, verdict, action, code, rollback_tried=tried) == kind
