"""The shipped policies load and say what the background story asks for."""

from __future__ import annotations

from pathlib import Path

from deploy_guard.policy import ExpectStep, SendStep, load_file, load_paths
from deploy_guard.policy.explain import explain

POLICIES = Path(__file__).resolve().parents[2] / "policies"
GOLDEN = ["agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]


def test_both_shipped_policies_load() -> None:
    names = sorted(p.name for p in load_paths([POLICIES]))
    assert names == ["chat-agent", "http-minimal"]


def test_chat_policy_covers_the_story() -> None:
    policy = load_file(POLICIES / "chat-agent.yaml")
    assert policy.applies_to("chat-agent")
    assert policy.on_fail == "rollback"
    kinds = {rule.name: rule.kind for rule in policy.rules}
    assert kinds["health"] == "http"
    assert kinds["no-1011-in-logs"] == "logs"
    assert {kinds["error-rate"], kinds["latency-p99"]} == {"metric"}

    golden = policy.rule("chat-golden-path").websocket
    assert golden is not None
    steps = golden.scenario
    assert isinstance(steps[0], SendStep)
    assert isinstance(steps[1], ExpectStep)
    assert steps[1].events == GOLDEN

    cycles = policy.rule("chat-cycles").websocket
    assert cycles is not None
    assert cycles.sessions >= 100
    assert cycles.concurrency == 5
    assert cycles.isolation is not None
    assert cycles.success_ratio == 1.0
    assert 1011 in cycles.close_codes.fail

    hold = policy.rule("chat-hold").websocket
    assert hold is not None
    assert hold.hold == 60.0
    # A 1011 at ~7 s must be seen at once: every hold session starts together and
    # the first failure decides (100 %, fail_fast).
    assert hold.sessions == hold.concurrency
    assert hold.success_ratio == 1.0
    assert policy.fail_fast

    logs = policy.rule("no-1011-in-logs").logs
    assert logs is not None
    assert logs.limit_count == 0
    assert any("1011" in p for p in logs.patterns)

    # Any ERROR entry of the new revision (a failed tool call, a 5xx request log) fails.
    errors = policy.rule("no-error-logs")
    assert errors.logs is not None
    assert errors.severity == "fail"
    assert errors.logs.filter == "severity>=ERROR"
    assert errors.logs.patterns == []  # every entry the filter selects counts
    assert errors.logs.limit_count == 0


def test_chat_policy_is_watched_with_production_values() -> None:
    from deploy_guard.policy.lint import policy_warnings
    from deploy_guard.policy.watch import watch_plan, watch_probe_rules

    policy = load_file(POLICIES / "chat-agent.yaml")
    assert policy.watch is not None
    plan = watch_plan([policy])
    assert (plan.window, plan.probe_interval, plan.sessions) == (300.0, 300.0, 5)
    assert (plan.metric_interval, plan.heartbeat) == (60.0, 60.0)  # Monitoring's own rhythm
    # The canary runs the golden path and holds each session past the 7 s failure point.
    assert plan.canary is not None
    assert plan.canary.websocket is not None
    assert plan.canary.name == "chat-golden-path-canary"
    golden = policy.rule("chat-golden-path").websocket
    assert golden is not None
    assert plan.canary.websocket.scenario == golden.scenario
    assert plan.canary_renew > 7.0
    rounds = watch_probe_rules([policy], plan)
    assert [r.name for r in rounds] == ["health", "chat-golden-path", "chat-cycles", "chat-hold"]
    assert policy_warnings(policy) == []


def test_chat_policy_explains_its_log_rules_in_plain_words() -> None:
    words = explain(load_file(POLICIES / "chat-agent.yaml"))
    rule = words.split("no-error-logs (logs, fail)", 1)[1].split("\n\n", 1)[0]
    assert "matching severity>=ERROR since the rollout" in rule
    assert "and counts every one.\n   Fails on any entry." in rule
    assert "Measured repeatedly: no failing pass is tolerated; 3 source errors in a row" in rule
    assert "Fails on any match." in words.split("no-1011-in-logs (logs, fail)", 1)[1]
    assert "pass(es)" not in words
    assert "more than 0" not in words


def test_rule_names_are_unique_across_shipped_policies() -> None:
    names = [rule.name for policy in load_paths([POLICIES]) for rule in policy.rules]
    assert len(names) == len(set(names))


def test_explain_minimal_policy_shows_defaults() -> None:
    text = explain(load_file(POLICIES / "http-minimal.yaml"))
    assert "Sends 20 GET requests to /, 4 at a time, each within 5s." in text
    assert "the HTTP status is 200 and it answers within 2s; 95% must succeed" in text
    assert "On inconclusive: leave traffic as it is and exit 3" in text
    assert "Probes send a Google ID token for the service URL" in text


def test_explain_words_for_every_option() -> None:
    from deploy_guard.policy import parse_policy

    text = """\
version: 1
name: all
services: [svc]
fail_fast: false
auth: {token_env: GUARD_TOKEN}
rules:
  - name: body
    kind: http
    dry_run: true
    http: {expect: {body_contains: ok, json: {"$.a": 1}}}
  - name: rate
    kind: logs
    logs: {max_rate: 2, relative_to_baseline: 1.5}
  - name: floor
    kind: metric
    severity: warn
    metric: {type: request_count, min: 5}
"""
    words = explain(parse_policy(text))
    assert (
        'the HTTP status is 200, the body contains "ok" and the JSON body\'s field $.a is 1;'
        in words
    )
    assert "Dry run: it is judged and reported but never decides." in words
    assert "Fails on more than 2 per minute or a rate above 1.5x the previous revision's." in words
    assert "Fails below 5." in words
    assert "Probes send a bearer token read from $GUARD_TOKEN." in words
    assert "runs every rule to the end (fail_fast: false)" in words
    file_auth = explain(parse_policy(text.replace("token_env: GUARD_TOKEN", "token_file: /t")))
    assert "Probes send a bearer token read from the file /t." in file_auth
    no_auth = explain(parse_policy(text.replace("token_env: GUARD_TOKEN", "id_token: none")))
    assert "Probes send no credentials." in no_auth


def test_explain_counts_log_limits_in_plain_grammar() -> None:
    from deploy_guard.policy import parse_policy

    text = """\
version: 1
name: counts
services: [svc]
rules:
  - name: few-errors
    kind: logs
    failure_limit: 1
    consecutive_error_limit: 1
    logs: {filter: "severity>=ERROR", max_count: 3}
  - name: one-timeout
    kind: logs
    failure_limit: 2
    logs: {patterns: [timeout], max_count: 1}
"""
    words = explain(parse_policy(text))
    assert "counts every one.\n   Fails on more than 3 entries." in words
    assert "Measured repeatedly: 1 failing pass is tolerated; a single source error" in words
    assert "Fails on more than 1 match." in words
    assert "Measured repeatedly: 2 failing passes are tolerated; 3 source errors in a row" in words


def test_every_policy_file_in_the_repository_still_validates() -> None:
    """``watch:`` adds checks (its defaults too): no shipped or test policy may fail them."""
    from click.testing import CliRunner

    from deploy_guard.cli import cli

    repo = POLICIES.parent
    folders = [POLICIES, *sorted(p for p in (repo / "tests").rglob("policies") if p.is_dir())]
    assert len(folders) > 1
    result = CliRunner().invoke(cli, ["policy", "validate", *map(str, folders)])
    assert result.exit_code == 0, result.output
