"""The policy side of ``deploy-guard watch``: the ``watch:`` block, its plan and its rounds.

``watch:`` is checked at load time like the rest of a policy (every problem at
its line and column; what works but judges less is a warning), and
``watch_plan`` / ``watch_probe_rules`` are pure: policies in, what the watch
runs out.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from deploy_guard.cli import cli
from deploy_guard.errors import PolicyError
from deploy_guard.exitcodes import ExitCode
from deploy_guard.policy import CanarySpec, Policy, Rule, WatchSpec, parse_policy
from deploy_guard.policy.explain import explain
from deploy_guard.policy.lint import policy_warnings
from deploy_guard.policy.model import NAME_PATTERN
from deploy_guard.policy.watch import WatchPlan, canary_name, watch_plan, watch_probe_rules
from deploy_guard.policy.watch_spec import DEFAULT_WATCH, round_bound

HEAD = "version: 1\nname: {name}\nservices: [chat]\n"
HEALTH = "  - {name: health, kind: http, http: {path: /health, requests: 10, concurrency: 4}}\n"
CHAT = """\
  - name: chat
    kind: websocket
    websocket:
      path: /ws/chat
      scenario:
        - send: {text: "hi {n}"}
        - expect: [agent_started, agent_completed]
          timeout: 5s
      hold: 1s
      sessions: 20
      concurrency: 10
      success_ratio: 95%
"""
CYCLES = (
    "  - {name: cycles, kind: websocket, websocket: {sessions: 100, concurrency: 5, "
    "scenario: [{expect: [a], timeout: 2s}]}}\n"
)
LOGS = "  - {name: errors, kind: logs, logs: {filter: 'severity>=ERROR', max_count: 0}}\n"
METRIC = "  - {name: error-rate, kind: metric, metric: {type: error_rate, max: 1%}}\n"
RULES = HEALTH + CHAT + LOGS


def policy(watch: str | None = None, rules: str = RULES, name: str = "chat") -> Policy:
    text = HEAD.format(name=name)
    if watch is not None:
        text += f"watch: {watch}\n"
    return parse_policy(text + "rules:\n" + rules, f"policies/{name}.yaml")


def problems(watch: str, rules: str = RULES) -> list[str]:
    """``line:col: path: message`` of every problem, the file name left out."""
    with pytest.raises(PolicyError) as info:
        policy(watch, rules)
    return [str(p).removeprefix("policies/chat.yaml:") for p in info.value.problems]


# --------------------------------------------------------------------------- the block


def test_a_policy_without_watch_gets_the_defaults() -> None:
    loaded = policy()
    assert loaded.watch is None
    assert loaded.watching == DEFAULT_WATCH == WatchSpec()
    spec = loaded.watching
    assert (spec.window, spec.probe_interval, spec.sessions) == (300.0, 300.0, 5)
    assert spec.canary is not None
    assert (spec.canary.rule, spec.canary.renew) == (None, 30.0)
    assert (spec.metric_interval, spec.heartbeat) == (60.0, 60.0)


def test_every_key_is_read_in_seconds() -> None:
    spec = policy(
        "{window: 30s, probe_interval: 1m, sessions: 2, canary: {rule: chat, renew: 10s}, "
        "metric_interval: 2m, heartbeat: 10s}"
    ).watching
    assert spec == WatchSpec(
        window=30.0,
        probe_interval=60.0,
        sessions=2,
        canary=CanarySpec(rule="chat", renew=10.0),
        metric_interval=120.0,
        heartbeat=10.0,
    )


@pytest.mark.parametrize("off", ["off", "false", "0", "0s", '" off "'])
def test_probe_interval_off(off: str) -> None:
    assert policy(f"{{probe_interval: {off}}}").watching.probe_interval is None


@pytest.mark.parametrize("off", ["off", "false"])
def test_canary_off(off: str) -> None:
    assert policy(f"{{canary: {off}}}").watching.canary is None


@pytest.mark.parametrize("on", ["true", "{}"])
def test_canary_on_is_the_default_canary(on: str) -> None:
    assert policy(f"{{canary: {on}}}").watching.canary == DEFAULT_WATCH.canary


def test_an_empty_watch_is_the_defaults_but_written() -> None:
    loaded = policy("{}")
    assert loaded.watch == DEFAULT_WATCH
    assert watch_plan([loaded]).source == "policy policies/chat.yaml"


@pytest.mark.parametrize(
    ("watch", "expected"),
    [
        (
            "{colour: red}",
            [
                '4:9: watch.colour: unknown key "colour" (allowed: window, probe_interval, '
                "sessions, canary, metric_interval, heartbeat)"
            ],
        ),
        (
            "{canary: {rule: chat, renw: 5s}}",
            [
                '4:30: watch.canary.renw: unknown key "renw" (did you mean "renew"? allowed: '
                "rule, renew)"
            ],
        ),
        (
            "{window: 5s}",
            [
                "4:17: watch.window: 5s is too short: a window is 10s to 24h (a few "
                "log lines and probe results must fit)"
            ],
        ),
        (
            "{window: 25h}",
            ['4:17: watch.window: "25h" is longer than 24h, the longest duration a policy may use'],
        ),
        ("{window: 300}", ["4:17: watch.window: 300 is not a duration (use 60s, 2m)"]),
        (
            "{probe_interval: 5}",
            ["4:25: watch.probe_interval: 5 is not a duration (use 60s, 2m), or off"],
        ),
        (
            "{probe_interval: never}",
            ['4:25: watch.probe_interval: "never" is not a duration (use 60s, 2m), or off'],
        ),
        (
            "{probe_interval: }",
            [
                "4:24: watch.probe_interval: give a duration (5m) or off: leave "
                "probe_interval out for the default (5m)"
            ],
        ),
        ("{sessions: 0}", ["4:19: watch.sessions: 0 is out of range (must be at least 1)"]),
        ("{sessions: 2.5}", ["4:19: watch.sessions: 2.5 is not a whole number"]),
        (
            "{canary: }",
            [
                "4:16: watch.canary: write canary: off for no canary, or leave canary "
                "out for the default (the policy's first websocket rule)"
            ],
        ),
        (
            "{canary: {renew: 0s}}",
            ["4:25: watch.canary.renew: 0s cannot work: give a duration above 0"],
        ),
        (
            "{canary: {rule: Chat}}",
            [
                '4:24: watch.canary.rule: "Chat" is not a valid name: use '
                "lowercase letters, digits, - and _, starting with a letter "
                "or digit"
            ],
        ),
        (
            "{metric_interval: 500ms}",
            [
                "4:26: watch.metric_interval: 500ms is too short: read "
                "metrics at most once a second (Cloud Monitoring's points "
                "are a minute apart; 1m is the default)"
            ],
        ),
        (
            "{heartbeat: 0s}",
            [
                "4:20: watch.heartbeat: 0s cannot work: the heartbeat is 1s to 1h "
                "(a log-based alert waits for it: a longer one would leave a silent "
                "watcher unnoticed for hours)"
            ],
        ),
        (
            "{heartbeat: 2h}",
            [
                "4:20: watch.heartbeat: 2h cannot work: the heartbeat is 1s to 1h "
                "(a log-based alert waits for it: a longer one would leave a silent "
                "watcher unnoticed for hours)"
            ],
        ),
        ("off", ['4:8: watch: "off" is not a mapping (key: value)']),
    ],
)
def test_each_bad_value_is_refused_at_its_place(watch: str, expected: list[str]) -> None:
    assert problems(watch) == expected


def test_the_bounds_themselves_are_allowed() -> None:
    spec = policy("{window: 10s, metric_interval: 1s, heartbeat: 1h, probe_interval: 24h}").watching
    assert (spec.window, spec.metric_interval, spec.heartbeat) == (10.0, 1.0, 3600.0)
    assert policy("{window: 24h, heartbeat: 1s}").watching.window == 86400.0


def test_every_problem_of_the_block_is_reported_at_once() -> None:
    found = problems("{window: 1s, sessions: 0, heartbeat: 2h, colour: red}")
    assert [p.split(": ")[1] for p in found] == [
        "watch.window",
        "watch.sessions",
        "watch.heartbeat",
        "watch.colour",
    ]


# --------------------------------------------------------------------------- fitting the rules


def test_the_canary_rule_must_be_a_rule_of_the_policy() -> None:
    assert problems("{canary: {rule: chta}}", HEALTH + CHAT + CYCLES) == [
        '4:24: watch.canary.rule: "chta" is not a rule of this policy; the canary runs a '
        "websocket rule's scenario: its websocket rules are chat, cycles"
    ]


def test_the_canary_rule_must_be_a_websocket_rule() -> None:
    assert problems("{canary: {rule: health}}") == [
        '4:24: watch.canary.rule: "health" is an http rule; the canary runs a websocket '
        "rule's scenario: its websocket rules are chat"
    ]
    assert problems("{canary: {rule: errors}}", HEALTH + LOGS) == [
        '4:24: watch.canary.rule: "errors" is a logs rule; the canary runs a websocket '
        "rule's scenario: it has no websocket rule: write canary: off"
    ]


def test_a_policy_without_websocket_rules_has_no_canary_and_needs_no_canary_off() -> None:
    loaded = policy(None, HEALTH + LOGS)
    assert loaded.watching.canary is not None  # the default, with nothing to run
    assert watch_plan([loaded]).canary is None


def test_a_canary_session_must_end_before_cloud_runs_request_timeout() -> None:
    assert problems("{canary: {renew: 59m56s}}") == [
        "4:25: watch.canary.renew: a canary session of rule chat may stay open 3601s (expect "
        "timeouts 5s + renew 3596s): Cloud Run cuts every request, WebSocket sessions included, "
        "at its request timeout, at most 1h; shorten renew so that it stays under 1h"
    ]
    assert policy("{canary: {renew: 59m54s}}").watching.canary is not None  # 3599 s: fits
    # exactly the cap is not under it
    assert problems("{canary: {renew: 59m55s}}")[0].startswith("4:25: watch.canary.renew:")


def test_a_default_canary_that_cannot_fit_points_at_its_rule() -> None:
    """Nothing written under watch: the rule's own scenario is what is too long."""
    long = CHAT.replace("timeout: 5s", "timeout: 1h")
    assert problems_without_watch(HEALTH + long) == [
        "9:7: rules[1].websocket: a canary session of rule chat may stay open 3630s (expect "
        "timeouts 1h + renew 30s): Cloud Run cuts every request, WebSocket sessions included, "
        "at its request timeout, at most 1h; write watch: {canary: off} or give a shorter renew "
        "so that it stays under 1h"
    ]
    assert policy("{canary: off}", HEALTH + long).watching.canary is None


def problems_without_watch(rules: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        policy(None, rules)
    return [str(p).removeprefix("policies/chat.yaml:") for p in info.value.problems]


def test_probe_interval_must_outlast_the_slowest_scaled_down_round() -> None:
    # chat scaled to 2 sessions, 2 at a time: one batch of 5s connect + 5s expect + 1s hold
    assert problems("{probe_interval: 11s, sessions: 2}") == [
        "4:25: watch.probe_interval: 11s is not longer than a probe round can take: rule chat, "
        "scaled down to watch.sessions 2, can take 11s (2 sessions, 2 at a time: "
        "connect_timeout 5s + expect timeouts 5s + hold 1s); make probe_interval longer than "
        "11s, or shorten the rule's timeouts"
    ]
    assert policy("{probe_interval: 12s, sessions: 2}").watching.probe_interval == 12.0
    # health: 5 requests, 4 at a time, is 2 batches of 5s: 10s, shorter than chat's
    assert policy("{probe_interval: 12s, sessions: 5}", HEALTH + LOGS).watching.sessions == 5
    assert problems("{probe_interval: 10s}", HEALTH + LOGS) == [
        "4:25: watch.probe_interval: 10s is not longer than a probe round can take: rule health, "
        "scaled down to watch.sessions 5, can take 10s (5 requests, 4 at a time: 2 x (timeout "
        "5s)); make probe_interval longer than 10s, or shorten the rule's timeouts"
    ]


def test_probe_interval_off_or_without_probe_rules_has_no_bound() -> None:
    assert policy("{probe_interval: off, sessions: 1000}").watching.probe_interval is None
    assert policy("{probe_interval: 1s}", LOGS).watching.probe_interval == 1.0


def test_the_problems_fitting_the_rules_are_reported_together(
    write: Callable[[str, str], Path],
) -> None:
    path = write(
        HEAD.format(name="demo")
        + "watch:\n  probe_interval: 5s\n  canary:\n    rule: health\n    renew: 1s\n"
        + "rules:\n"
        + RULES,
        "p.yaml",
    )
    result = CliRunner().invoke(cli, ["policy", "validate", str(path)])
    assert result.exit_code == ExitCode.USAGE
    lines = result.stdout.splitlines()
    assert [line.split(": ")[0:2] for line in lines[:-1]] == [
        [f"{path}:5:19", "watch.probe_interval"],
        [f"{path}:7:11", "watch.canary.rule"],
    ]
    assert lines[-1] == "2 problems in 1 policy file"


# --------------------------------------------------------------------------- warnings


def warnings(loaded: Policy) -> list[str]:
    return [str(w).removeprefix(f"{loaded.source}:") for w in policy_warnings(loaded)]


def test_a_short_renew_is_a_warning() -> None:
    assert warnings(policy("{canary: {renew: 2s}}")) == [
        "4:25: watch.canary.renew: warning: renew 2s is short: each canary session is closed 2s "
        "after its scenario and a new one opened, so the canary mostly measures handshakes and "
        "never sees a failure that comes later in a session (a close with 1011 7s in); renew at "
        "least 5s (30s is the default)"
    ]
    assert warnings(policy("{canary: {renew: 5s}}")) == []
    assert warnings(policy("{canary: {renew: 2s}}", HEALTH + LOGS)) == []  # no canary runs


def test_reading_metrics_more_often_than_a_minute_is_a_warning() -> None:
    assert warnings(policy("{metric_interval: 10s}", RULES + METRIC)) == [
        "4:26: watch.metric_interval: warning: metric_interval 10s is shorter than 60s: Cloud "
        "Monitoring's points are a minute apart; reading more often costs quota and adds nothing"
    ]
    assert warnings(policy("{metric_interval: 1m}", RULES + METRIC)) == []
    assert warnings(policy("{metric_interval: 10s}")) == []  # no metric rule reads anything


def test_a_default_probe_interval_a_round_outlasts_is_a_warning_not_an_error() -> None:
    slow = "  - {name: slow, kind: http, http: {requests: 10, timeout: 1m}}\n"
    loaded = policy(None, LOGS + slow)  # 5 requests one at a time, 1m each: 5m
    assert warnings(loaded) == [
        "6:5: rules[1]: warning: the watch's default probe_interval, 5m, is not longer than "
        "this rule's probe round can take: scaled down to watch.sessions 5, it can take 5m "
        "(5 requests, one at a time: 5 x (timeout 60s)), and the rounds would run back to back; "
        "set watch.probe_interval longer than 5m, or shorten the rule's timeouts"
    ]
    assert warnings(policy("{sessions: 4}", LOGS + slow)) == []
    with pytest.raises(PolicyError):
        policy("{probe_interval: 5m}", LOGS + slow)


def test_validate_prints_watch_warnings_and_exits_0(write: Callable[[str, str], Path]) -> None:
    path = write(
        HEAD.format(name="demo") + "watch: {metric_interval: 5s}\nrules:\n" + RULES + METRIC,
        "p.yaml",
    )
    result = CliRunner().invoke(cli, ["policy", "validate", str(path)])
    assert result.exit_code == ExitCode.PASS, result.output
    assert result.stdout.splitlines()[-1] == "1 policy file valid; 1 warning"
    assert result.stdout.startswith(f"{path}:4:26: watch.metric_interval: warning: ")


# --------------------------------------------------------------------------- watch_plan


def test_no_policies_watch_with_the_defaults_and_no_canary() -> None:
    assert watch_plan([]) == WatchPlan(
        window=300.0,
        probe_interval=300.0,
        sessions=5,
        canary=None,
        canary_renew=30.0,
        metric_interval=60.0,
        heartbeat=60.0,
        source="defaults",
    )


def test_one_policy_is_its_plan_and_its_canary_is_a_copy_of_the_rule() -> None:
    loaded = policy(
        "{window: 30s, probe_interval: 1m, sessions: 2, canary: {renew: 10s}, "
        "metric_interval: 2m, heartbeat: 10s}"
    )
    plan = watch_plan([loaded])
    assert (plan.window, plan.probe_interval, plan.sessions) == (30.0, 60.0, 2)
    assert (plan.canary_renew, plan.metric_interval, plan.heartbeat) == (10.0, 120.0, 10.0)
    assert plan.source == "policy policies/chat.yaml"
    canary = plan.canary
    assert canary is not None
    assert canary.websocket is not None
    rule = loaded.rule("chat")
    assert rule.websocket is not None
    assert canary.name == "chat-canary"
    assert (canary.websocket.sessions, canary.websocket.concurrency) == (1, 1)
    assert canary.websocket.hold == 10.0
    assert canary.every_step
    # everything else is the rule's own: the scenario, the path, the close codes, the ratio
    same = rule.websocket.model_dump(exclude={"sessions", "concurrency", "hold"})
    assert canary.websocket.model_dump(exclude={"sessions", "concurrency", "hold"}) == same
    assert (canary.kind, canary.severity, canary.missing_data) == (
        "websocket",
        "fail",
        "inconclusive",
    )
    assert Rule.model_validate(canary.model_dump()) == canary  # a valid rule


def test_the_default_canary_is_the_first_websocket_rule() -> None:
    plan = watch_plan([policy(None, HEALTH + CYCLES + CHAT)])
    assert plan.canary is not None
    assert plan.canary.name == "cycles-canary"
    assert plan.source == "defaults"
    named = watch_plan([policy("{canary: {rule: chat}}", HEALTH + CYCLES + CHAT)])
    assert named.canary is not None
    assert named.canary.name == "chat-canary"


def test_two_policies_the_most_watchful_wins_and_the_fewest_sessions() -> None:
    first = policy(
        "{window: 1m, probe_interval: off, sessions: 3, canary: off, heartbeat: 30s}",
        name="chat",
    )
    second = policy(
        "{window: 10m, probe_interval: 2m, sessions: 8, canary: {renew: 20s}, "
        "metric_interval: 30s}",
        rules=CYCLES + LOGS,
        name="cycles",
    )
    plan = watch_plan([first, second])
    assert plan.window == 60.0
    assert plan.probe_interval == 120.0  # "off" in one policy does not switch off the other's
    assert plan.sessions == 3
    assert plan.metric_interval == 30.0
    assert plan.heartbeat == 30.0
    assert plan.canary is not None
    assert plan.canary.name == "cycles-canary"
    assert plan.canary_renew == 20.0
    assert plan.source == "policies policies/chat.yaml, policies/cycles.yaml"
    both_off = watch_plan([first, policy("{probe_interval: off}", LOGS, name="logs")])
    assert both_off.probe_interval is None


def test_a_policy_without_watch_takes_part_with_the_defaults() -> None:
    written = policy("{window: 10m, probe_interval: off, canary: off}", name="chat")
    defaults = policy(None, CYCLES, name="cycles")
    plan = watch_plan([written, defaults])
    assert plan.window == 300.0
    assert plan.probe_interval == 300.0
    assert plan.canary is not None
    assert plan.canary.name == "cycles-canary"
    assert plan.source == "policy policies/chat.yaml"


def test_canary_names_fit_the_rule_name_limit_and_do_not_collide() -> None:
    assert canary_name("chat", set()) == "chat-canary"
    long = "a" * 63
    assert canary_name(long, set()) == "a" * 56 + "-canary"
    assert canary_name("chat", {"chat-canary"}) == "chat-canary-2"
    assert canary_name(long, {"a" * 56 + "-canary"}) == "a" * 54 + "-canary-2"
    for name in (canary_name(long, set()), canary_name("x", {"x-canary", "x-canary-2"})):
        assert len(name) <= 63
        assert re.match(NAME_PATTERN, name)
    taken = CHAT + CHAT.replace("name: chat", "name: chat-canary").replace(
        "path: /ws/chat", "path: /ws/other"
    )
    plan = watch_plan([policy("{canary: {rule: chat}}", taken)])
    assert plan.canary is not None
    assert plan.canary.name == "chat-canary-2"


# --------------------------------------------------------------------------- probe rules


def test_probe_rules_are_scaled_down_and_keep_their_names() -> None:
    loaded = policy("{sessions: 3}", HEALTH + CHAT + LOGS + METRIC)
    rules = watch_probe_rules([loaded], watch_plan([loaded]))
    assert [r.name for r in rules] == ["health", "chat"]
    health, chat = rules
    assert health.http is not None
    assert chat.websocket is not None
    assert (health.http.requests, health.http.concurrency) == (3, 3)
    assert (chat.websocket.sessions, chat.websocket.concurrency) == (3, 3)
    # everything else is the rule's own, and each copy is a valid rule
    assert chat.websocket.success_ratio == 0.95
    assert chat.websocket.hold == 1.0
    assert health.http.path == "/health"
    for rule in rules:
        assert Rule.model_validate(rule.model_dump()) == rule


def test_fewer_attempts_than_the_cap_are_left_alone_and_concurrency_follows_sessions() -> None:
    one = "  - {name: one, kind: websocket, websocket: {sessions: 1}}\n"
    wide = "  - {name: wide, kind: http, http: {requests: 50, concurrency: 50}}\n"
    loaded = policy("{sessions: 4}", one + wide)
    plan = watch_plan([loaded])
    rules = {r.name: r for r in watch_probe_rules([loaded], plan)}
    assert rules["one"] == loaded.rule("one")
    assert rules["wide"].http is not None
    assert (rules["wide"].http.requests, rules["wide"].http.concurrency) == (4, 4)


def test_probe_rules_of_every_policy_at_the_plans_sessions() -> None:
    first = policy("{sessions: 2}", HEALTH + LOGS, name="chat")
    second = policy(None, CYCLES, name="cycles")
    plan = watch_plan([first, second])
    rules = watch_probe_rules([first, second], plan)
    assert [r.name for r in rules] == ["health", "cycles"]
    assert rules[0].http is not None
    assert rules[0].http.requests == 2
    assert rules[1].websocket is not None
    assert rules[1].websocket.sessions == 2


def test_no_probe_rules_when_the_rounds_are_off() -> None:
    loaded = policy("{probe_interval: off}")
    assert watch_probe_rules([loaded], watch_plan([loaded])) == []


def test_a_rounds_bound_is_batches_times_the_longest_attempt() -> None:
    chat = policy().rule("chat").websocket
    assert chat is not None
    assert round_bound(chat) == (
        22.0,
        "20 sessions, 10 at a time: 2 x (connect_timeout 5s + expect timeouts 5s + hold 1s)",
    )
    health = policy().rule("health").http
    assert health is not None
    assert round_bound(health) == (15.0, "10 requests, 4 at a time: 3 x (timeout 5s)")


# --------------------------------------------------------------------------- explain


def test_explain_says_the_watch_plan_in_words() -> None:
    words = explain(
        policy("{window: 1m, probe_interval: 2m, sessions: 2, heartbeat: 10s}", RULES + METRIC)
    )
    watch = words.split("\nWatch (deploy-guard watch", 1)[1].split("\n\n", 1)[0]
    assert watch.startswith("): judges whatever serves the service over a sliding 60s window")
    assert "Logs: errors is judged on the serving revision's entries, streamed live" in watch
    assert (
        "Probe rounds: every 2m, health and chat, each with at most 2 sessions or requests "
        "(concurrency capped to it); a round can take up to 11s." in watch
    )
    assert (
        "Canary (chat-canary): one WebSocket session always open: it runs chat's scenario, "
        "holds the session 30s after it, then closes it and opens a new one at once" in watch
    )
    assert "A canary session may stay open 35s (expect timeouts 5s + renew 30s)" in watch
    assert "Metrics: error-rate read at most once a minute" in watch
    assert "Heartbeat: a watch_heartbeat log event every 10s." in watch
    assert "On a fail: roll back to the last known good revision." in watch


def test_explain_says_what_is_off_and_when_the_defaults_apply() -> None:
    words = explain(policy("{probe_interval: off, canary: off}"))
    assert "Probe rounds: none (probe_interval: off); health and chat never run." in words
    assert "Canary: off." in words
    defaults = explain(policy(None, HEALTH + LOGS))
    assert "Watch (deploy-guard watch, with the defaults: the policy has no watch:)" in defaults
    assert "Canary: none (the policy has no websocket rule)." in defaults
    assert "Heartbeat: a watch_heartbeat log event every minute." in defaults


def test_built_in_python_none_is_off_and_seconds_need_no_unit() -> None:
    spec = WatchSpec(probe_interval=None, canary=None, window=30)
    assert (spec.probe_interval, spec.canary, spec.window) == (None, None, 30.0)
    assert WatchSpec(probe_interval=0).probe_interval is None
    rule = CanarySpec.model_json_schema()["properties"]["rule"]["anyOf"][0]
    assert rule["pattern"] == NAME_PATTERN  # the same names as a rule's
