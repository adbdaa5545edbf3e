"""``notify:`` in a policy, ``--notify`` on the command line, and the secrets read at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy_guard.errors import ConfigError, PolicyError
from deploy_guard.events.model import DEFAULT_ON
from deploy_guard.events.setup import build, parse_flag, resolve
from deploy_guard.log import redact_text
from deploy_guard.policy import load_file
from deploy_guard.policy.explain import explain

HEAD = """\
version: 1
name: notify
services: [chat]
rules:
  - name: health
    kind: http
    http: {path: /health}
notify:
"""
URL = "https://hooks.slack.com/services/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dEf"
KEY = "a-signing-key-of-32-characters!!"


def problems(tmp_path: Path, entries: str) -> list[str]:
    path = tmp_path / "p.yaml"
    path.write_text(HEAD + entries)
    with pytest.raises(PolicyError) as caught:
        load_file(path)
    return [str(p).split(": ", 1)[1] for p in caught.value.problems]


def test_a_valid_notify_list_loads_with_default_events(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        HEAD
        + """\
  - kind: slack
    url_env: SLACK_WEBHOOK_URL
  - kind: webhook
    url_env: DEPLOY_HOOK_URL
    secret_env: DEPLOY_HOOK_SECRET
    on: [fail, rollback, promote]
  - kind: pubsub
    topic: projects/my-project/topics/deploys
    on: [rollback]
  - kind: log
"""
    )
    policy = load_file(path)
    assert [n.kind for n in policy.notify] == ["slack", "webhook", "pubsub", "log"]
    assert policy.notify[0].on == list(DEFAULT_ON)
    assert policy.notify[1].where == "webhook (DEPLOY_HOOK_URL)"
    said = explain(policy).splitlines()
    assert "Notifies webhook (DEPLOY_HOOK_URL) of fail, rollback or promote." in said
    assert "Notifies pubsub (projects/my-project/topics/deploys) of rollback." in said


@pytest.mark.fault("policy", "notify: entries that cannot work", "each refused with its place")
def test_every_problem_of_a_notify_list_is_reported_with_its_place(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
  - kind: teams
    url_env: X
  - kind: slack
    url: https://hooks.slack.com/services/T0/B0/x
  - kind: webhook
    url_env: https://example.com/hook
  - kind: webhook
    url_env: HOOK
    on: [fail, rolback]
  - kind: pubsub
    topic: my-topic
  - kind: slack
    url_env: SLACK
    secret_env: KEY
  - kind: log
    on: []
""",
    )
    assert found == [
        'notify[0].kind: "teams" is not allowed (use slack, google_chat, webhook, pubsub or log)',
        'notify[1].url: unknown key "url" (did you mean "url_env"? allowed: kind, url_env, '
        "secret_env, topic, on)",
        "notify[2].url_env: this is not an environment variable name (letters, digits and _, "
        "not starting with a digit): name the variable that holds the URL or key, never the "
        "value itself (not repeated here: it may be a secret)",
        'notify[3].on[1]: "rolback" is not allowed (use fail, rollback, rollback_failed, '
        "inconclusive, promote, pass, step, watch_degraded or error)",
        'notify[4].topic: "my-topic" is not a Pub/Sub topic: write projects/PROJECT/topics/TOPIC '
        "(a project ID, and a name that starts with a letter)",
        "notify[5].secret_env: secret_env signs webhook notifiers; a slack notifier is not "
        "signed (its URL is its credential): drop secret_env",
        "notify[6].on: needs at least 1 item",
    ]


@pytest.mark.parametrize(
    ("flag", "fields"),
    [
        ("slack:SLACK_URL", ("slack", "SLACK_URL", None, None, list(DEFAULT_ON))),
        ("webhook:HOOK+KEY:fail,rollback", ("webhook", "HOOK", "KEY", None, ["fail", "rollback"])),
        (
            "pubsub:projects/my-project/topics/deploys:rollback",
            ("pubsub", None, None, "projects/my-project/topics/deploys", ["rollback"]),
        ),
        ("log", ("log", None, None, None, list(DEFAULT_ON))),
        ("log:fail,step", ("log", None, None, None, ["fail", "step"])),
        ("google_chat:CHAT_URL:promote", ("google_chat", "CHAT_URL", None, None, ["promote"])),
    ],
)
def test_the_notify_flag_says_one_notifier(flag: str, fields: tuple[object, ...]) -> None:
    spec = parse_flag(flag)
    assert (spec.kind, spec.url_env, spec.secret_env, spec.topic, spec.on) == fields


@pytest.mark.parametrize(
    ("flag", "words"),
    [
        ("teams:X", "Input should be 'slack', 'google_chat', 'webhook', 'pubsub' or 'log'"),
        ("slack", "a slack notifier needs url_env"),
        ("webhook:HOOK:nope", "Input should be 'fail'"),
        ("pubsub:topic", "is not a Pub/Sub topic"),
    ],
)
def test_a_notify_flag_that_cannot_work_says_why_and_how(flag: str, words: str) -> None:
    with pytest.raises(ValueError, match="write KIND:WHERE") as caught:
        parse_flag(flag)
    assert words in str(caught.value)


def test_secrets_are_read_checked_and_registered_at_start() -> None:
    env = {"SLACK_URL": URL, "HOOK": "https://example.com/h00k/Zq81", "KEY": KEY}
    targets = resolve([parse_flag("slack:SLACK_URL"), parse_flag("webhook:HOOK+KEY:fail")], env)
    assert [(t.kind, t.name) for t in targets] == [
        ("slack", "slack (SLACK_URL)"),
        ("webhook", "webhook (HOOK)"),
    ]
    assert URL not in repr(targets)
    assert KEY not in repr(targets)
    # registered: no output can show them from now on, whole or in part
    shown = redact_text(f"posting to {URL}, key {KEY}, token xoxW3bh00kS3cr3tT0k3nAbCdEf")
    assert shown == "posting to [redacted], key [redacted], token [redacted]"
    # ...while words of the URL that are not its secret stay readable
    assert redact_text("https://chat-agent.a.run.app/services") == (
        "https://chat-agent.a.run.app/services"
    )


@pytest.mark.fault("cli", "notify: a variable unset, http://, a short key", "exit 2, all named")
def test_every_notifier_that_cannot_work_is_named_before_anything_runs() -> None:
    specs = [
        parse_flag("slack:SLACK_URL"),
        parse_flag("webhook:HOOK+KEY"),
        parse_flag("google_chat:CHAT_URL"),
    ]
    env = {"HOOK": "http://example.com/hook", "KEY": "short-key", "CHAT_URL": "ftp://x/y"}
    with pytest.raises(ConfigError) as caught:
        resolve(specs, env)
    assert str(caught.value) == (
        "cannot notify: slack (SLACK_URL): the environment variable SLACK_URL is not set (it "
        "holds the URL to post to); webhook (HOOK): HOOK is an http:// URL: it and the "
        "payload would cross the network in clear; use https; webhook (HOOK): the key in KEY "
        "has 9 characters; a signing key needs at least 16 (e.g. `openssl rand -hex 32`); "
        "google_chat (CHAT_URL): CHAT_URL is not an https:// URL"
    )
    assert "example.com" not in str(caught.value)  # the URL is a secret: never repeated


def test_entries_for_the_same_notifier_are_one_hearing_of_both() -> None:
    env = {"HOOK": "https://example.com/hook"}
    (target,) = resolve([parse_flag("webhook:HOOK:fail"), parse_flag("webhook:HOOK:promote")], env)
    assert target.on == frozenset({"fail", "promote"})


def test_nothing_configured_builds_the_empty_fan_out() -> None:
    fan = build((), clients=None, project="p")
    assert fan.channels == []
