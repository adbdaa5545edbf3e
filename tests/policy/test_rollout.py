"""The policy side of ``deploy-guard rollout``: steps from ``--steps`` or the policies.

``parse_steps`` and ``rollout_plan`` are pure (text and policies in, a plan or
a ConfigError out); ``policy validate`` warns about steps too short for a
metric rule, and ``policy explain`` says what each step judges.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from deploy_guard.cli import cli
from deploy_guard.errors import ConfigError, PolicyError
from deploy_guard.exitcodes import ExitCode
from deploy_guard.policy import Policy, parse_policy
from deploy_guard.policy.explain import explain
from deploy_guard.policy.lint import policy_warnings
from deploy_guard.policy.model import RolloutStep
from deploy_guard.policy.problems import Problem
from deploy_guard.policy.rollout import (
    RolloutPlan,
    parse_steps,
    plan_warnings,
    rollout_plan,
    short_steps,
    shortest_step_for_metrics,
)

PROBES = """\
  - {name: up, kind: http, http: {path: /health}}
  - {name: chat, kind: websocket, every_step: false, websocket: {}}
"""
LOGS = "  - {name: errors, kind: logs, logs: {filter: 'severity>=ERROR'}}\n"
METRIC = "  - {name: error-rate, kind: metric, metric: {type: error_rate, max: 1%}}\n"


def policy(
    name: str = "chat",
    rollout: str | None = "{steps: [{percent: 10, duration: 5m}, {percent: 50, duration: 10m}]}",
    rules: str = PROBES + LOGS + METRIC,
    file: str | None = None,
) -> Policy:
    text = f"version: 1\nname: {name}\nservices: [chat]\n"
    if rollout is not None:
        text += f"rollout: {rollout}\n"
    return parse_policy(text + "rules:\n" + rules, file or f"policies/{name}.yaml")


def steps(*pairs: tuple[int, float]) -> list[RolloutStep]:
    return [RolloutStep(percent=p, duration=d) for p, d in pairs]


# --------------------------------------------------------------------------- parse_steps


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10:2m,50:5m", [(10, 120.0), (50, 300.0)]),
        (" 5 : 90s , 25:1m30s ,75:1h", [(5, 90.0), (25, 90.0), (75, 3600.0)]),
        ("1:500ms", [(1, 0.5)]),
        ("99:24h", [(99, 86400.0)]),
    ],
)
def test_parse_steps_reads_percent_and_duration_pairs(
    text: str, expected: list[tuple[int, float]]
) -> None:
    assert parse_steps(text) == steps(*expected)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "--steps is empty: give PERCENT:DURATION items, e.g. --steps 10:2m,50:5m"),
        ("  ", "--steps is empty"),
        ("10", '--steps "10": item 1 "10" is not PERCENT:DURATION (e.g. 10:2m,50:5m)'),
        ("10:2m,,50:5m", 'item 2 "" is not PERCENT:DURATION'),
        ("10:2m,", 'item 2 "" is not PERCENT:DURATION'),
        (":2m", 'item 1 ":2m" is not PERCENT:DURATION'),
        ("10:", 'item 1 "10:" is not PERCENT:DURATION'),
        ("ten:2m", 'item 1 "ten:2m" percent: "ten" is not a whole number'),
        ("10%:2m", 'item 1 "10%:2m" percent: "10%" is not a whole number: write the percent'),
        ("12.5:2m", '"12.5" is not a whole number'),
        ("0:2m", 'item 1 "0:2m" percent: 0% gives the candidate no traffic to judge: a step\'s'),
        ("100:2m", "100% is not a step: after its last step the rollout sends 100%"),
        ("-5:2m", "-5% gives the candidate no traffic"),
        (f"{10**30}:2m", f"{10**30}% is not a step"),
        ("10:120", 'item 1 "10:120" duration: "120" is not a duration (use 60s, 2m)'),
        ("10:0s", 'item 1 "10:0s" duration: 0s cannot work: give a duration above 0'),
        ("10:25h", '"25h" is longer than 24h'),
        ("10:inf", '"inf" is not a duration'),
        ("10:" + "9" * 400 + "s", "is longer than 24h"),
        ("10:2m,abc", 'item 2 "abc" is not PERCENT:DURATION'),
        (
            "50:2m,10:5m",
            'item 2 "10:5m" percent: step 2 (10%) is not above step 1 (50%): each step gives '
            "the candidate more traffic than the one before",
        ),
        ("10:2m,10:5m", "step 2 (10%) is not above step 1 (10%)"),
        (
            ",".join(f"{n}:1m" for n in range(1, 22)),
            "21 steps are more than a rollout may have (at most 20)",
        ),
    ],
)
def test_parse_steps_names_the_bad_item_and_says_the_fix(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_steps(text)
    assert message in str(info.value)
    assert info.value.exit_code == ExitCode.USAGE
    assert "\n" not in str(info.value)


def test_parse_steps_reports_every_bad_item_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        parse_steps("0:2m,50:0s,100:5m")
    text = str(info.value)
    assert 'item 1 "0:2m" percent' in text
    assert 'item 2 "50:0s" duration' in text
    assert 'item 3 "100:5m" percent' in text


def test_parse_steps_quotes_hostile_text_on_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_steps("10:2m\nfake.yaml:1:1: forged,\x1b[2J")
    assert "\n" not in str(info.value)
    assert "\x1b" not in str(info.value)
    assert "\\n" in str(info.value)


def test_parse_steps_and_the_policy_refuse_the_same_steps() -> None:
    """One validation for both: a step the CLI refuses, a policy file refuses too."""
    for text in ("0:2m", "100:2m", "10:0s", "10:25h", "50:2m,10:5m", "10:2m,10:5m"):
        with pytest.raises(ConfigError):
            parse_steps(text)
        written = ", ".join(
            f"{{percent: {p}, duration: {d}}}" for p, d in (i.split(":") for i in text.split(","))
        )
        with pytest.raises(PolicyError):
            policy(rollout=f"{{steps: [{written}]}}")


# --------------------------------------------------------------------------- rollout_plan


def test_the_policy_steps_are_the_plan() -> None:
    plan = rollout_plan([policy()], None)
    assert plan == RolloutPlan(
        steps=tuple(steps((10, 300.0), (50, 600.0))),
        metric_lag=180.0,
        source="policies/chat.yaml",
    )


def test_steps_given_on_the_command_line_win() -> None:
    plan = rollout_plan([policy()], parse_steps("20:1m"))
    assert plan.steps == tuple(steps((20, 60.0)))
    assert plan.source == "--steps"
    assert plan.metric_lag == 180.0  # Monitoring's lag is the policy's, whoever gives the steps


def test_steps_on_the_command_line_serve_a_policy_without_rollout() -> None:
    plan = rollout_plan([policy(rollout=None)], parse_steps("10:2m,50:5m"))
    assert plan == RolloutPlan(tuple(steps((10, 120.0), (50, 300.0))), 180.0, "--steps")


def test_no_steps_anywhere_says_both_fixes() -> None:
    with pytest.raises(ConfigError) as info:
        rollout_plan([policy(rollout=None)], None)
    assert str(info.value) == (
        "no rollout steps: add rollout.steps to policy policies/chat.yaml or pass "
        "--steps 10:2m,50:5m"
    )
    assert info.value.exit_code == ExitCode.USAGE


def test_no_policies_and_no_steps() -> None:
    with pytest.raises(ConfigError, match=r"^no rollout steps: pass --steps 10:2m,50:5m$"):
        rollout_plan([], None)


def test_two_policies_with_different_steps_are_named_both() -> None:
    first = policy("chat")
    second = policy(
        "latency", rollout="{steps: [{percent: 25, duration: 5m}]}", rules=LOGS + METRIC
    )
    with pytest.raises(ConfigError) as info:
        rollout_plan([first, second], None)
    assert str(info.value) == (
        "the policies give different rollout steps: policies/chat.yaml says 10:5m,50:10m, "
        "policies/latency.yaml says 25:5m; make them the same, keep rollout.steps in one "
        "policy only, or pass --steps"
    )
    # --steps settles it
    assert rollout_plan([first, second], parse_steps("5:5m")).source == "--steps"


def test_policies_that_agree_share_the_steps_and_the_largest_metric_lag() -> None:
    written = "{steps: [{percent: 10, duration: 5m}, {percent: 50, duration: 10m}]"
    first = policy("chat", rollout=written + ", metric_lag: 2m}")
    second = policy("latency", rollout=written + ", metric_lag: 4m}", rules=METRIC)
    without = policy("logs-only", rollout=None, rules=LOGS)
    plan = rollout_plan([first, without, second], None)
    assert plan.metric_lag == 240.0
    assert plan.steps == tuple(steps((10, 300.0), (50, 600.0)))
    assert plan.source == "policies/chat.yaml, policies/latency.yaml"


def test_a_policy_that_would_judge_nothing_at_a_step_is_refused_for_steps_too() -> None:
    """Without rollout: the policy loads (check can use it), but no rollout can."""
    probes_once = policy("probes", rollout=None, rules=PROBES)
    only_before = parse_policy(
        "version: 1\nname: once\nservices: [chat]\nrules:\n"
        "  - {name: up, kind: http, every_step: false, http: {}}\n",
        "policies/once.yaml",
    )
    assert rollout_plan([probes_once], parse_steps("10:5m")).steps  # "up" runs at every step
    with pytest.raises(ConfigError) as info:
        rollout_plan([only_before], parse_steps("10:5m"))
    assert str(info.value).startswith(
        "policy policies/once.yaml: the rollout's steps would judge nothing"
    )
    assert "missing evidence is never a pass" in str(info.value)


def test_steps_built_in_python_are_checked_like_parsed_ones() -> None:
    going_down = steps((50, 60.0), (10, 60.0))
    with pytest.raises(ConfigError, match=r"step 2 \(10%\) is not above step 1 \(50%\)"):
        rollout_plan([policy()], going_down)
    with pytest.raises(ConfigError, match="give at least one step"):
        rollout_plan([policy()], [])


# --------------------------------------------------------------------------- step rules


def test_every_step_is_on_by_default_and_logs_and_metrics_are_always_at_every_step() -> None:
    loaded = policy()
    assert [r.name for r in loaded.step_rules] == ["up", "errors", "error-rate"]
    assert loaded.rule("chat").at_every_step is False
    assert loaded.rule("errors").every_step is True  # written true is allowed, and the default


def test_every_step_true_may_be_written_on_any_rule() -> None:
    loaded = policy(rules=LOGS.replace("kind: logs", "kind: logs, every_step: true"))
    assert loaded.rule("errors").at_every_step


def test_errors_are_at_their_line_and_column(write: Callable[[str, str], Path]) -> None:
    text = """\
        version: 1
        name: demo
        services: [demo]
        rollout:
          steps:
            - {percent: 50, duration: 2m}
            - {percent: 10, duration: 0s}
          metric_lag: 2h
        rules:
          - {name: a, kind: logs, every_step: false, logs: {}}
        """
    path = write(text, "p.yaml")
    result = CliRunner().invoke(cli, ["policy", "validate", str(path)])
    assert result.exit_code == ExitCode.USAGE
    lines = result.stdout.splitlines()
    assert [line.split(": ")[0:2] for line in lines[:-1]] == [
        [f"{path}:7:31", "rollout.steps[1].duration"],
        [f"{path}:8:15", "rollout.metric_lag"],
        [f"{path}:10:39", "rules[0].every_step"],
    ]
    assert lines[-1] == "3 problems in 1 policy file"
    # the order of the steps is checked once each step is valid, and said at the percent
    path = write(text.replace("0s", "5m").replace("2h", "2m"), "p.yaml")
    lines = CliRunner().invoke(cli, ["policy", "validate", str(path)]).stdout.splitlines()
    assert [line.split(": ")[0:2] for line in lines[:-1]] == [
        [f"{path}:7:17", "rollout.steps[1].percent"],
        [f"{path}:10:39", "rules[0].every_step"],
    ]


def test_steps_that_judge_nothing_point_at_rollout(write: Callable[[str, str], Path]) -> None:
    path = write(
        """\
        version: 1
        name: demo
        services: [demo]
        rollout:
          steps: [{percent: 10, duration: 5m}]
        rules:
          - {name: up, kind: http, every_step: false, http: {}}
        """,
        "p.yaml",
    )
    result = CliRunner().invoke(cli, ["policy", "validate", str(path)])
    assert result.exit_code == ExitCode.USAGE
    assert result.stdout.splitlines()[0] == (
        f"{path}:5:3: rollout: the rollout's steps would judge nothing: every rule is an http or "
        "websocket rule with every_step: false, and missing evidence is never a pass; let a "
        "probe rule run at every step (drop its every_step: false) or add a logs or metric rule"
    )


# --------------------------------------------------------------------------- warnings

SHORT = """\
version: 1
name: demo
services: [demo]
rollout:
  steps:
    - {percent: 10, duration: 2m}
    - {percent: 50, duration: 4m}
rules:
  - {name: up, kind: http, http: {}}
  - {name: error-rate, kind: metric, metric: {type: error_rate, max: 1%}}
  - {name: p99, kind: metric, missing_data: ignore, metric: {type: latency, max: 800ms}}
  - {name: trial, kind: metric, dry_run: true, metric: {type: latency, max: 500ms}}
"""


def test_a_step_shorter_than_lag_plus_a_minute_is_too_short_for_each_metric_rule() -> None:
    loaded = parse_policy(SHORT, "p.yaml")
    assert shortest_step_for_metrics(180.0) == 240.0
    assert loaded.rollout is not None
    found = short_steps(loaded, loaded.rollout.steps, loaded.rollout.metric_lag)
    # step 2 lasts exactly 4m: long enough; the dry-run rule decides nothing, so no warning
    assert [(s.index, s.rule.name, s.needed) for s in found] == [
        (0, "error-rate", 240.0),
        (0, "p99", 240.0),
    ]
    # a shorter lag makes 2m enough
    assert short_steps(loaded, loaded.rollout.steps, 60.0) == []


@pytest.mark.fault(
    "metrics",
    "a rollout step shorter than metric_lag + 60 s (Monitoring's lag and 60 s alignment)",
    "policy validate warns: the step, the rule, the duration that decides; still exit 0",
)
def test_validate_warns_with_the_step_the_rule_and_the_duration_that_decides(
    write: Callable[[str, str], Path],
) -> None:
    path = write(SHORT, "p.yaml")
    result = CliRunner().invoke(cli, ["policy", "validate", str(path)])
    assert result.exit_code == ExitCode.PASS, result.output
    assert result.stdout.splitlines() == [
        f"{path}:6:31: rollout.steps[0].duration: warning: step 1 (10% for 2m) is too short for "
        'metric rule "error-rate": it sees no complete data in a step shorter than 4m '
        "(metric_lag 3m + 60s, Cloud Monitoring's smallest alignment), so it has no data in "
        "this step and its missing_data (inconclusive) decides; make the step at least 4m",
        f"{path}:6:31: rollout.steps[0].duration: warning: step 1 (10% for 2m) is too short for "
        'metric rule "p99": it sees no complete data in a step shorter than 4m (metric_lag 3m '
        "+ 60s, Cloud Monitoring's smallest alignment), so it has no data in this step and its "
        "missing_data (ignore) decides; make the step at least 4m",
        "1 policy file valid; 2 warnings",
    ]


def test_warnings_in_json_carry_their_severity(write: Callable[[str, str], Path]) -> None:
    path = write(SHORT, "p.yaml")
    result = CliRunner().invoke(cli, ["policy", "validate", "--json", str(path)])
    assert result.exit_code == ExitCode.PASS
    rows = json.loads(result.stdout)
    assert [(r["severity"], r["path"], r["line"], r["column"]) for r in rows] == [
        ("warning", "rollout.steps[0].duration", 6, 31),
        ("warning", "rollout.steps[0].duration", 6, 31),
    ]
    assert result.stderr.strip() == "1 policy file valid; 2 warnings"


def test_warnings_do_not_hide_problems_and_errors_keep_exit_2(
    write: Callable[[str, str], Path], tmp_path: Path
) -> None:
    write(SHORT, "short.yaml")
    write("name: x\n", "bad.yaml")
    result = CliRunner().invoke(cli, ["policy", "validate", str(tmp_path)])
    assert result.exit_code == ExitCode.USAGE
    lines = result.stdout.splitlines()
    assert [line.split(": ")[2] == "warning" for line in lines[:-1]] == [
        False,
        False,
        True,
        True,
    ]
    assert lines[-1] == "2 problems in 1 of 2 policy files; 1 valid; 2 warnings"
    rows = json.loads(
        CliRunner().invoke(cli, ["policy", "validate", "--json", str(tmp_path)]).stdout
    )
    assert [r["severity"] for r in rows] == ["error", "error", "warning", "warning"]


def test_a_policy_without_short_steps_has_no_warnings() -> None:
    assert policy_warnings(policy()) == []
    assert policy_warnings(policy(rollout=None)) == []


def test_a_warning_prints_as_a_compiler_warning() -> None:
    warning = Problem("p.yaml", 6, 31, "rollout.steps[0].duration", "too short", "warning")
    assert str(warning) == "p.yaml:6:31: rollout.steps[0].duration: warning: too short"
    assert str(Problem("p.yaml", 6, 31, "x", "bad")) == "p.yaml:6:31: x: bad"


def test_plan_warnings_cover_steps_from_the_command_line() -> None:
    """--steps is in no file, so nothing checked it against the metric rules before."""
    loaded = policy()
    assert plan_warnings([loaded], rollout_plan([loaded], None)) == []
    [warning] = plan_warnings([loaded], rollout_plan([loaded], parse_steps("10:1m")))
    assert warning.startswith(
        'policy policies/chat.yaml: step 1 (10% for 60s) is too short for metric rule "error-rate"'
    )


# --------------------------------------------------------------------------- explain


def test_explain_shows_each_step_and_what_it_judges() -> None:
    text = explain(parse_policy(SHORT.replace("{name: up,", "{name: up, every_step: false,")))
    rollout = text.split("\nRollout (deploy-guard rollout)")[1].split("\n\n")[0].splitlines()
    assert rollout == [
        ": 2 steps, then 100%.",
        "   Before the first step: up through the tag URL, as check does.",
        "   Step 1: 10% of traffic for 2m, judging no rule; error-rate, p99 and trial have no "
        "data in a step this short.",
        "   Step 2: 50% of traffic for 4m, judging error-rate, p99 and trial (metrics).",
        "   Then 100% to the new revision, pinned by name.",
        "   Metric points count in a step once 3m old (metric_lag) and cover 60s: a step "
        "shorter than 4m gives metric rules no data.",
        "   A step passes when its time is over and no fail rule failed; a failure at any step "
        "puts traffic back on the split from before the rollout.",
    ]
    assert (
        "Rollout: runs only before the first traffic step, through the tag URL (every_step: "
        "false)." in text
    )


def test_explain_names_probes_logs_and_metrics_of_a_step() -> None:
    text = explain(policy())
    assert (
        "   Step 1: 10% of traffic for 5m, judging up (probe), errors (logs), error-rate "
        "(metric)." in text
    )
    assert "   Before the first step: up and chat through the tag URL, as check does." in text


def test_explain_says_a_policy_without_steps_needs_them_from_the_command_line() -> None:
    text = explain(policy(rollout=None))
    assert "Rollout: no steps in this policy; deploy-guard rollout needs --steps (e.g. " in text
    assert "every_step: false" in text  # the chat rule still says it runs only before the steps
