"""``rate`` and ``ramp`` in policy files: written forms, every refusal at its place, explain.

A policy comes from a repository anyone can change: a rate that could never
start a session, one no process could reach, a ramp with nothing to raise or
a pacing that outlasts the check are refused at load time, each at its line
and column, saying the fix.
"""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st
from ruamel.yaml import YAML

from deploy_guard.errors import PolicyError
from deploy_guard.policy import parse_policy
from deploy_guard.policy.explain import explain
from deploy_guard.policy.lint import policy_warnings
from deploy_guard.policy.model import HttpSpec, WebSocketSpec
from deploy_guard.policy.pacing import MAX_RATE, Pacing, format_rate, parse_rate
from deploy_guard.policy.schema import policy_schema
from deploy_guard.policy.watch_spec import round_bound

HEAD = "version: 1\nname: demo\nservices: [demo]\ntimeout: 1m\nrules:\n"


def ws(**fields: Any) -> str:
    """A policy with one websocket rule whose block is written in flow style on line 8."""
    spec = {"path": "/ws", "sessions": 10, "concurrency": 2, **fields}
    body = ", ".join(f"{k}: {v}" for k, v in spec.items())
    return HEAD + "  - name: chat\n    kind: websocket\n    websocket: {" + body + "}\n"


def problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "p.yaml")
    return [str(p).removeprefix("p.yaml:") for p in info.value.problems]


@pytest.mark.parametrize(
    ("written", "per_second"),
    [
        ("200/s", 200.0),
        ("30/m", 0.5),
        ("36/h", 0.01),
        ("0.5/s", 0.5),
        (" 200 / s ", 200.0),
        ("10000/s", MAX_RATE),
    ],
)
def test_written_rates(written: str, per_second: float) -> None:
    assert parse_rate(written) == pytest.approx(per_second)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (200, "is not a rate (use 200/s or 30/m"),  # per second or per minute?
        ("200", "is not a rate"),
        ("200/d", "is not a rate"),
        ("-1/s", "is not a rate"),
        ("1e3/s", "is not a rate"),
        (".inf/s", "is not a rate"),
        ("9" * 400 + "/s", "is not a rate"),  # overflows to inf
        (True, "is not a rate"),
        (None, "is not a rate"),
        ("0/s", "would never start a session"),
        ("10001/s", "is more than 10,000/s"),
        ("0.01/h", "less than one start a day"),
    ],
)
def test_rates_that_cannot_work_are_refused(value: Any, says: str) -> None:
    with pytest.raises(ValueError, match=says.replace("(", r"\(").replace("/", "/")):
        parse_rate(value)


def test_from_python_a_bare_number_is_per_second_but_not_in_files() -> None:
    assert WebSocketSpec(rate=50, concurrency=2, sessions=4).rate == 50.0
    assert HttpSpec.model_validate({"rate": "6/m"}).rate == pytest.approx(0.1)
    assert problems(ws(rate=50)) == [
        "8:64: rules[0].websocket.rate: 50 is not a rate (use 200/s or 30/m: starts per "
        "second or per minute)"
    ]


@pytest.mark.parametrize(
    ("rate", "written"), [(200.0, "200/s"), (0.5, "30/m"), (1 / 3600, "1/h"), (1 / 7, "0.143/s")]
)
def test_rates_are_shown_as_written(rate: float, written: str) -> None:
    assert format_rate(rate) == written


@pytest.mark.fault("policy", "rate or ramp that cannot work", "refused at its place")
def test_every_pacing_problem_is_reported_at_its_place() -> None:
    text = (
        HEAD + "  - name: chat\n    kind: websocket\n    websocket:\n      hold: 10s\n"
        "      sessions: 200\n      concurrency: 20\n      rate: 2/s\n"
        "  - name: one-user\n    kind: http\n    http: {ramp: 5s}\n"
        "  - name: slow-ramp\n    kind: http\n    http: {concurrency: 4, ramp: 2m}\n"
    )
    assert problems(text) == [
        "12:13: rules[0].websocket.rate: at 2/s the last of 200 sessions starts 99.5s in "
        "(+ hold 10s), more than the policy timeout 60s: the check would end first; raise "
        "rate, lower sessions or raise timeout",
        "15:18: rules[1].http.ramp: ramp raises the number of concurrent users from 1 to "
        "concurrency over 5s; with concurrency 1 there is nothing to raise: drop ramp, or "
        "raise concurrency",
        "18:34: rules[2].http.ramp: ramp 2m does not fit in the policy timeout 60s: the check "
        "would end before the last users started; shorten ramp or raise timeout",
    ]


def test_field_problems_come_first_each_at_its_value() -> None:
    assert problems(ws(ramp="0s", rate="0/m")) == [
        "8:64: rules[0].websocket.ramp: 0s cannot work: give a duration above 0",
        '8:74: rules[0].websocket.rate: "0/m" would never start a session: give a rate above 0',
    ]


def test_a_ramp_and_a_rate_that_fit_load_as_seconds() -> None:
    policy = parse_policy(ws(rate="4/s", ramp="2s", hold="5s"), "p.yaml")
    spec = policy.rule("chat").websocket
    assert spec is not None
    assert (spec.rate, spec.ramp) == (4.0, 2.0)
    # the last of 10 sessions starts 2.25s in at the earliest (9 gaps of 250ms)
    pacing = Pacing.of(spec)
    assert pacing.least == 2.25
    assert pacing.most == 2.0 + 2.25


@given(
    concurrency=st.integers(1, 500),
    ramp=st.floats(0.001, 3600),
    elapsed=st.floats(0, 4000),
)
def test_the_ramp_lets_user_k_start_exactly_when_the_allowance_reaches_k(
    concurrency: int, ramp: float, elapsed: float
) -> None:
    pacing = Pacing(count=1000, concurrency=concurrency, ramp=ramp)
    allowed = pacing.allowance(elapsed)
    assert 1 <= allowed <= concurrency
    started = [k for k in range(1, concurrency + 1) if pacing.user_start(k) <= elapsed]
    assert len(started) == allowed  # the users the runner lets start are the allowance
    line = min(float(concurrency), 1 + (concurrency - 1) * elapsed / ramp)
    assert line - 1 - 1e-9 < allowed <= line + 1e-9  # linear from 1 to concurrency
    assert pacing.user_start(1) == 0.0
    assert pacing.user_start(concurrency) == (ramp if concurrency > 1 else 0.0)


def test_a_watch_round_bound_adds_the_ramp_and_the_rate_waits() -> None:
    policy = parse_policy(ws(rate="4/s", ramp="2s", hold="5s"), "p.yaml")
    spec = policy.rule("chat").websocket
    assert spec is not None
    assert round_bound(spec) == (
        5 * 10.0 + 2.0 + 2.25,
        "10 sessions, 2 at a time: 5 x (connect_timeout 5s + hold 5s) + ramp 2s + 9 starts at 4/s",
    )


def test_explain_says_how_the_rule_is_paced() -> None:
    text = explain(parse_policy(ws(rate="4/s", ramp="2s", hold="5s"), "p.yaml"))
    assert (
        "   Rate: sessions start at most 4/s, one every 250ms, never in a burst; a start waits "
        "for one of the users to be free (concurrency stays the cap, and every session runs)."
    ) in text
    assert (
        "   Ramp: users join one by one, from 1 to 2 over 2s (one more every 2s); each then runs "
        "its sessions one after another."
    ) in text
    assert "   The last session starts 2.25s in at the earliest; pacing adds up to 4.25s" in text


def test_a_rate_the_users_cannot_reach_is_a_warning_with_the_numbers() -> None:
    policy = parse_policy(ws(rate="10/s", hold="1s", sessions=20), "p.yaml")
    (warning,) = policy_warnings(policy)
    assert str(warning) == (
        "p.yaml:8:64: rules[0].websocket.rate: warning: rate 10/s is out of reach: each "
        "session is held 1s, so 2 users start at most 2/s once they are all busy (at 10/s "
        "about 10 would be open at once); raise concurrency to 10 or lower rate to what it "
        "can do"
    )
    assert "Note: rate 10/s is out of reach" in explain(policy)


def test_the_schema_agrees_with_the_loader() -> None:
    validator = jsonschema.Draft202012Validator(policy_schema())
    good, bad = ws(rate="200/s", ramp="10s"), ws(rate=200)
    assert not list(validator.iter_errors(YAML(typ="safe").load(good)))
    assert list(validator.iter_errors(YAML(typ="safe").load(bad)))
    parse_policy(good)
    with pytest.raises(PolicyError):
        parse_policy(bad)
