"""Loading and validation: every problem, at its exact line, column and path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from deploy_guard.errors import ConfigError, PolicyError
from deploy_guard.exitcodes import ExitCode
from deploy_guard.policy import (
    ExpectStep,
    Problem,
    SendStep,
    load_file,
    load_paths,
    parse_policy,
)

#: A valid policy to mutate; line numbers in tests refer to this layout.
VALID = """\
version: 1
name: demo
services: [demo]
rules:
  - name: health
    kind: http
    http:
      path: /health
  - name: chat
    kind: websocket
    websocket:
      path: /ws/chat
      scenario:
        - send: {json: {type: message, user_id: "{user}"}}
        - expect: [agent_started, agent_completed]
          timeout: 5s
      hold: 2s
      sessions: 4
      concurrency: 2
"""

HEAD = "version: 1\nname: demo\nservices: [demo]\nrules:\n"


def shown(text: str) -> list[str]:
    """Problems of a document as ``line:col: path: message`` (file name dropped)."""
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "p.yaml")
    return [str(p).removeprefix("p.yaml:") for p in info.value.problems]


def test_a_valid_policy_loads_with_units_converted(write: Callable[[str, str], Path]) -> None:
    policy = load_file(write(VALID, "demo.yaml"))
    assert policy.name == "demo"
    assert str(policy.source).endswith("demo.yaml")
    ws = policy.rule("chat").websocket
    assert ws is not None
    assert ws.hold == 2.0
    assert ws.success_ratio == 1.0
    assert isinstance(ws.scenario[0], SendStep)
    assert ws.scenario[0].json == {"type": "message", "user_id": "{user}"}
    assert isinstance(ws.scenario[1], ExpectStep)
    assert ws.scenario[1].events == ["agent_started", "agent_completed"]
    assert ws.scenario[1].timeout == 5.0
    assert ws.close_codes.fail == [1011, 1006]
    assert policy.timeout == 600.0
    assert policy.applies_to("demo")
    assert not policy.applies_to("demo-2")


def test_the_issue_example_hold_sixty() -> None:
    text = VALID.replace("hold: 2s", "hold: sixty")
    assert shown(text) == [
        '17:13: rules[1].websocket.hold: "sixty" is not a duration (use 60s, 2m)'
    ]


def test_policy_error_is_a_config_error_with_exit_code_2() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy("name: x\n", "x.yaml")
    assert isinstance(info.value, ConfigError)
    assert info.value.exit_code == ExitCode.USAGE
    assert str(info.value).startswith("2 problems in policy files\n")
    assert 'x.yaml:1:1: services: "services" is required' in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            HEAD + "  - {name: a, kind: http, http: {}}\ncolour: red\n",
            [
                '6:1: colour: unknown key "colour" (did you mean "rollout"? allowed: version, '
                "name, description, services, on_fail, on_inconclusive, on_pass, fail_fast, "
                "timeout, evidence_window, auth, rollout, watch, notify, rules)"
            ],
            id="unknown-top-level-key",
        ),
        pytest.param(
            HEAD + "  - name: a\n    kind: http\n    http:\n      sucess_ratio: 95%\n",
            [
                '8:7: rules[0].http.sucess_ratio: unknown key "sucess_ratio" (did you mean'
                ' "success_ratio"? allowed: method, path, headers, body, json, timeout, requests,'
                " concurrency, rate, ramp, expect, success_ratio)"
            ],
            id="unknown-nested-key-with-suggestion",
        ),
        pytest.param(
            HEAD + "  - name: a\n    kind: grpc\n",
            ['6:11: rules[0].kind: unknown rule kind "grpc" (use http, websocket, logs, metric)'],
            id="unknown-kind",
        ),
        pytest.param(
            HEAD + "  - kind: http\n    http: {}\n",
            ['5:5: rules[0].name: "name" is required'],
            id="missing-key",
        ),
        pytest.param(
            HEAD + "  - name: a\n    kind: http\n    severity: fatal\n    http: {}\n",
            ['7:15: rules[0].severity: "fatal" is not allowed (use fail or warn)'],
            id="bad-choice",
        ),
        pytest.param(
            HEAD + "  - name: a\n    kind: http\n    http:\n      requests: ten\n"
            "      concurrency: 0\n      success_ratio: 95\n",
            [
                '8:17: rules[0].http.requests: "ten" is not a whole number',
                "9:20: rules[0].http.concurrency: 0 is out of range (must be at least 1)",
                "10:22: rules[0].http.success_ratio: 95 is not a ratio (use 95% or 0.95)",
            ],
            id="numbers-ranges-ratios",
        ),
        pytest.param(
            HEAD + "  - name: a\n    kind: http\n    websocket:\n      path: /ws\n",
            [
                '7:5: rules[0].websocket: a "websocket:" block does not belong in a rule of '
                "kind http"
            ],
            id="block-of-another-kind",
        ),
        pytest.param(
            HEAD + "  - name: a\n    kind: logs\n",
            ['5:5: rules[0]: a rule of kind logs needs a "logs:" block'],
            id="missing-block",
        ),
        pytest.param(
            HEAD + "  - {name: a, kind: http, http: {}}\n  - {name: a, kind: http, http: {}}\n",
            ['6:12: rules[1].name: rule name "a" is used twice; names must be unique'],
            id="duplicate-rule-name",
        ),
        pytest.param(
            HEAD + "  - name: a\n    kind: logs\n    logs:\n"
            "      patterns: ['ok', '(unclosed', '(?=x)']\n",
            [
                '8:24: rules[0].logs.patterns[1]: "(unclosed" is not a regular expression: '
                "missing ), unterminated subpattern at position 0",
                '8:37: rules[0].logs.patterns[2]: "(?=x)" uses look-around or back-references,'
                " which Cloud Logging (RE2) does not support",
            ],
            id="regex",
        ),
        pytest.param(
            HEAD + "  - name: a\n    kind: websocket\n    websocket:\n"
            "      query: {token: '{tok}'}\n      scenario:\n"
            "        - send: {text: 'hi {usr}'}\n        - send: {text: a, json: {}}\n"
            "        - {wait: 1s}\n        - send: {txt: a}\n",
            [
                '8:22: rules[0].websocket.query.token: unknown placeholder "{tok}" '
                "(use {user}, {session} or {n})",
                '10:24: rules[0].websocket.scenario[0].send.text: unknown placeholder "{usr}" '
                "(use {user}, {session} or {n})",
                "11:17: rules[0].websocket.scenario[1].send: send needs exactly one of text or "
                "json",
                "12:11: rules[0].websocket.scenario[2]: a scenario step is send: {json: ...}, "
                "send: {text: ...} or expect: [event, ...]",
                '13:18: rules[0].websocket.scenario[3].send.txt: unknown key "txt" '
                "(use text or json)",
            ],
            id="scenario-steps-and-templates",
        ),
        pytest.param(
            HEAD + "  - name: a\n    kind: websocket\n    websocket:\n      scenario:\n"
            "        - expect: []\n          timeout: 5\n          extra: 1\n",
            [
                "9:19: rules[0].websocket.scenario[0].expect: needs at least 1 item",
                "10:20: rules[0].websocket.scenario[0].timeout: 5 is not a duration (use 60s, 2m)",
                '11:11: rules[0].websocket.scenario[0].extra: unknown key "extra" (did you mean '
                '"allow_extra"? allowed: expect, timeout, allow_extra)',
            ],
            id="expect-step",
        ),
        pytest.param(
            HEAD + "  - {name: a, kind: metric, metric: {type: error_rate}}\n"
            "  - {name: b, kind: metric, metric: {type: error_rate, percentile: 99, max: 1%}}\n"
            "  - {name: c, kind: metric, metric: {type: latency, min: 1s}}\n"
            "  - {name: d, kind: metric, metric: {type: error_rate, max: 150%}}\n"
            "  - {name: e, kind: metric, metric: {type: request_count, min: many}}\n"
            "  - {name: f, kind: metric, metric: {type: latency, baseline: {factor: 0, plus: x}}}\n"
            "  - {name: g, kind: metric, metric: {type: latency, max: 5%}}\n",
            [
                "5:37: rules[0].metric: give max, min or baseline: the rule needs a threshold",
                "6:68: rules[1].metric.percentile: percentile applies to latency only",
                "7:58: rules[2].metric.min: min applies to request_count only (a traffic floor)",
                '8:61: rules[3].metric.max: "150%" is over 100%; error_rate is a share of requests',
                '9:64: rules[4].metric.min: "many" is not a request count (use a number like 100)',
                "10:72: rules[5].metric.baseline.factor: 0 is out of range (must be more than 0.0)",
                '10:81: rules[5].metric.baseline.plus: "x" is not a number, a duration (50ms) or '
                "a percentage",
                '11:58: rules[6].metric.max: "5%" is not a duration (use 800ms, 1.5s)',
            ],
            id="metric-thresholds-in-their-units",
        ),
        pytest.param(
            "version: 1\nname: demo\nservices: [demo]\ntimeout: 30s\nrules:\n  - name: a\n"
            "    kind: websocket\n    websocket:\n      sessions: 2\n      concurrency: 5\n",
            [
                "10:20: rules[0].websocket.concurrency: concurrency 5 is more than sessions 2: "
                "each concurrent user needs at least one session"
            ],
            id="users-more-than-sessions",
        ),
        pytest.param(
            HEAD + "  - name: a\n    kind: websocket\n    websocket:\n"
            "      close_codes: {fail: [1011], clean: [1000, 1011]}\n",
            ["8:42: rules[0].websocket.close_codes.clean: [1011] cannot be both fail and clean"],
            id="close-codes-overlap",
        ),
        pytest.param(
            "version: 1\nname: demo\nservices: [demo]\ntimeout: 30s\nrules:\n  - name: a\n"
            "    kind: websocket\n    websocket:\n      hold: 60s\n",
            ["9:13: rules[0].websocket.hold: hold 60s cannot fit in the policy timeout 30s"],
            id="hold-longer-than-timeout",
        ),
        pytest.param(
            HEAD + "  - name: a\n    kind: http\n    http:\n      path: health\n"
            "      headers: {X-Key: '${1BAD}', X-N: 1}\n"
            "      expect: {json: {'$..bad[': 1}, status: [700]}\n",
            [
                '8:13: rules[0].http.path: "health" must start with "/" (it is appended to the '
                "service URL)",
                "9:40: rules[0].http.headers.X-N: 1 is not text; put it in quotes",
                '10:23: rules[0].http.expect.json["$..bad["]: "$..bad[" is not a JSON path (use '
                "$.status, status or a.b[0].c)",
                "10:47: rules[0].http.expect.status[0]: 700 is out of range (must be at most 599)",
            ],
            id="http",
        ),
        pytest.param(
            HEAD + "  - name: a\n    kind: http\n    http:\n      headers: {X-Key: '${1BAD}'}\n",
            ['8:24: rules[0].http.headers.X-Key: "${1BAD}" is not an environment variable name'],
            id="env-reference",
        ),
        pytest.param(
            HEAD + "  - name: a\n    kind: http\n    http: {body: x, json: {a: 1}}\n",
            ["7:27: rules[0].http.json: give body or json, not both"],
            id="body-and-json",
        ),
        pytest.param(
            "version: 1\nname: demo\nservices: [demo]\nauth: {token_env: TOKEN, token_file: /t}\n"
            "rules:\n  - {name: a, kind: http, http: {}}\n",
            ["4:38: auth.token_file: give token_env or token_file, not both"],
            id="auth-two-token-sources",
        ),
        pytest.param(
            "version: 2\nname: Demo Policy\nservices: []\nrules: []\non_fail: maybe\n"
            "fail_fast: perhaps\n",
            [
                "1:10: version: 2 is not allowed (use 1)",
                '2:7: name: "Demo Policy" is not a valid name: use lowercase letters, digits, - '
                "and _, starting with a letter or digit",
                "3:11: services: needs at least 1 item",
                "4:8: rules: needs at least 1 item",
                '5:10: on_fail: "maybe" is not allowed (use rollback or none)',
                '6:12: fail_fast: "perhaps" is not true or false',
            ],
            id="every-top-level-error-at-once",
        ),
        pytest.param(
            "version: 1\nname: demo\nservices: x\nrules:\n  - name: a\n    kind: http\n"
            "    http: 5\n  - name: b\n    kind: logs\n    logs: {max_rate: abc}\n"
            "  - name: c\n    kind: websocket\n"
            "    websocket: {event_field: '', subprotocols: {a: 1}}\n",
            [
                '3:11: services: "x" is not a list',
                "7:11: rules[0].http: 5 is not a mapping (key: value)",
                '10:22: rules[1].logs.max_rate: "abc" is not a number',
                "13:30: rules[2].websocket.event_field: must not be empty",
                "13:48: rules[2].websocket.subprotocols: a mapping is not a list",
            ],
            id="wrong-types",
        ),
        pytest.param(
            "version: 1\nname: demo\nservices: ['']\nauth: {token_env: 'A-B'}\n? [a, b]\n: 1\n"
            "rules:\n  - {name: a, kind: http, http: {}}\n",
            [
                "3:12: services[0]: must not be empty",
                '4:19: auth.token_env: "A-B" is not an environment variable name',
                "5:3: keys must be plain names",
            ],
            id="empty-strings-env-names-complex-keys",
        ),
        pytest.param(
            HEAD + "  - name: a\n    kind: websocket\n    websocket:\n      scenario:\n"
            "        - {send: hi}\n        - {send: {text: 5}}\n"
            "        - {send: {text: a}, expect: [x]}\n        - {json: {a: 1}}\n",
            [
                "9:18: rules[0].websocket.scenario[0].send: send needs a mapping: {json: {...}} "
                "or {text: ...}",
                "10:25: rules[0].websocket.scenario[1].send.text: text must be a string",
                '11:29: rules[0].websocket.scenario[2].expect: unknown key "expect" in a send step',
                "12:11: rules[0].websocket.scenario[3]: a send step is written send: {json: {...}} "
                "or send: {text: ...}",
            ],
            id="send-step-shapes",
        ),
        pytest.param(
            HEAD + "  - name: a\n    kind: websocket\n    websocket:\n      scenario:\n"
            "        - expect: {event: agent_started, timeout: 2s}\n",
            [
                "9:19: rules[0].websocket.scenario[0].expect: a mapping is not a list: name the "
                "expected events in order, e.g. expect: [agent_started, agent_completed], with "
                "timeout: and allow_extra: beside expect"
            ],
            id="expect-written-as-a-mapping",
        ),
    ],
)
def test_validation_problems(text: str, expected: list[str]) -> None:
    assert shown(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            HEAD + "  - name: a\n    kind: [http\n",
            [
                "7:1: invalid YAML: while parsing a flow sequence expected ',' or ']', but got "
                "'<stream end>'"
            ],
            id="unclosed-bracket",
        ),
        pytest.param(
            "version: 1\nname: demo\nname: other\n",
            [
                '3:1: invalid YAML: while constructing a mapping found duplicate key "name" '
                'with value "other" (original value: "demo")'
            ],
            id="duplicate-key",
        ),
        pytest.param("", ["1:1: the file is empty; a policy needs at least name, services, rules"]),
        pytest.param(
            "- a\n- b\n", ["1:1: a policy file holds one mapping (name: ..., rules: [...])"]
        ),
        pytest.param(
            "a: 1\n---\nb: 2\n",
            [
                "2:1: invalid YAML: expected a single document in the stream but found another "
                "document (a file holds one policy: move the next one to a file of its own)"
            ],
            id="two-documents",
        ),
        pytest.param(
            "name:\tx\n\tbad: [\n",
            None,
            id="tabs",
        ),
        pytest.param(
            "version: 1\nrules:\n\t- name: a\n",
            [
                "3:1: invalid YAML: while scanning for the next token found character '\\t' "
                "that cannot start any token (YAML indents with spaces, never tabs: replace the "
                "tab with spaces)"
            ],
            id="tab-indent",
        ),
    ],
)
def test_invalid_yaml_is_a_problem_not_a_traceback(text: str, expected: list[str] | None) -> None:
    got = shown(text)
    if expected is None:
        assert len(got) == 1
        assert "invalid YAML" in got[0]
    else:
        assert got == expected


def test_yaml_tags_never_construct_objects(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text = HEAD + (
        f"  - name: !!python/object/apply:os.system ['touch {marker}']\n"
        "    kind: http\n    http: {}\n"
    )
    assert shown(text) == [
        "5:11: rules[0].name: YAML tags (tag:yaml.org,2002:python/object/apply:os.system) are "
        "not allowed in policy files"
    ]
    assert not marker.exists()


def test_an_alias_bomb_is_refused_quickly() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        ref = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([ref] * 10)}]")
    got = shown("\n".join(lines) + "\n")
    assert got == ["1:1: the document is too large (more than 100000 nodes)"]


def test_a_self_referencing_alias_does_not_loop() -> None:
    got = shown("version: 1\nname: demo\nservices: &a [*a]\nrules: []\n")
    assert "4:8: rules: needs at least 1 item" in got


def test_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(PolicyError) as info:
        load_file(latin)
    assert [str(p) for p in info.value.problems] == [f"{latin}:1:1: the file is not UTF-8 text"]
    with pytest.raises(PolicyError) as info:
        load_file(tmp_path / "absent.yaml")
    assert "cannot read the file: No such file or directory" in str(info.value.problems[0])


def test_problem_text_form() -> None:
    problem = Problem("policies/chat.yaml", 14, 7, "rules[2].websocket.hold", "bad")
    assert str(problem) == "policies/chat.yaml:14:7: rules[2].websocket.hold: bad"
    assert str(Problem("f.yaml", 1, 1, "", "empty")) == "f.yaml:1:1: empty"


def test_folders_load_every_policy_and_report_every_file(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(VALID, encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.yml").write_text(VALID.replace("name: demo", "name: other"), "utf-8")
    (tmp_path / "notes.txt").write_text("not a policy", encoding="utf-8")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "c.yaml").write_text("broken: [", encoding="utf-8")
    policies = load_paths([tmp_path])
    assert [p.name for p in policies] == ["demo", "other"]

    (tmp_path / "bad1.yaml").write_text("name: x\n", encoding="utf-8")
    (tmp_path / "bad2.yaml").write_text(VALID.replace("kind: http", "kind: tcp"), "utf-8")
    with pytest.raises(PolicyError) as info:
        load_paths([tmp_path])
    files = {Path(p.file).name for p in info.value.problems}
    assert files == {"bad1.yaml", "bad2.yaml"}
    assert len(info.value.problems) == 3


def test_policy_names_are_unique_across_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(VALID, encoding="utf-8")
    (tmp_path / "b.yaml").write_text(VALID, encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        load_paths([tmp_path])
    [problem] = info.value.problems
    assert (problem.path, problem.line, problem.column) == ("name", 2, 7)
    assert Path(problem.file).name == "b.yaml"
    assert 'policy name "demo" is also used by' in problem.message


def test_missing_paths_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="no such file or folder"):
        load_paths([tmp_path / "nope"])
    with pytest.raises(PolicyError, match=r"no policy files \(\*.yaml, \*.yml\) found"):
        load_paths([tmp_path])


def test_dates_and_other_scalars_become_text() -> None:
    text = HEAD.replace("name: demo\n", "name: demo\ndescription: 2024-01-01\n")
    policy = parse_policy(text + "  - {name: a, kind: http, http: {}}\n")
    assert policy.description == "2024-01-01"
