"""Hostile policy files: values that parse but cannot work are refused at load time.

A policy is read from a repository anyone can send a change to. Whatever it
holds, the loader ends in a Policy that can work or in problems, one line
each, at the place of the offending value, saying the fix.
"""

from __future__ import annotations

import copy
import io
import math
import os
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML

from deploy_guard.cli import cli
from deploy_guard.errors import PolicyError
from deploy_guard.exitcodes import ExitCode
from deploy_guard.policy import Policy, parse_policy
from deploy_guard.policy.lint import policy_warnings
from deploy_guard.policy.messages import model_at
from deploy_guard.policy.problems import Problem, format_path

#: Every block of the language, every numeric field written with a valid value.
FULL: dict[str, Any] = {
    "version": 1,
    "name": "full",
    "services": ["svc"],
    "timeout": "10m",
    "evidence_window": "2m",
    "rollout": {
        "steps": [{"percent": 10, "duration": "4m"}, {"percent": 50, "duration": "5m"}],
        "metric_lag": "3m",
    },
    "watch": {
        "window": "5m",
        "probe_interval": "5m",
        "sessions": 5,
        "canary": {"rule": "w", "renew": "30s"},
        "metric_interval": "1m",
        "heartbeat": "1m",
    },
    "rules": [
        {
            "name": "h",
            "kind": "http",
            "failure_limit": 0,
            "consecutive_error_limit": 3,
            "http": {
                "timeout": "5s",
                "requests": 10,
                "concurrency": 2,
                "rate": "20/s",
                "ramp": "2s",
                "success_ratio": "95%",
                "expect": {"status": [200], "max_latency": "1s"},
            },
        },
        {
            "name": "w",
            "kind": "websocket",
            "every_step": False,
            "websocket": {
                "connect_timeout": "5s",
                "hold": "1s",
                "ping_interval": "20s",
                "sessions": 4,
                "concurrency": 2,
                "rate": "2/s",
                "ramp": "1s",
                "success_ratio": 0.9,
                "close_codes": {"fail": [1011], "clean": [1000]},
                "scenario": [{"send": {"text": "hi"}}, {"expect": ["a"], "timeout": "15s"}],
            },
        },
        {
            "name": "l",
            "kind": "logs",
            "logs": {"max_count": 0, "max_rate": 1.5, "relative_to_baseline": 2.0},
        },
        {
            "name": "m-err",
            "kind": "metric",
            "metric": {
                "type": "error_rate",
                "window": "5m",
                "min_requests": 20,
                "max": "1%",
                "baseline": {"factor": 1.2, "plus": "1%"},
            },
        },
        {
            "name": "m-lat",
            "kind": "metric",
            "metric": {
                "type": "latency",
                "percentile": 99,
                "max": "800ms",
                "baseline": {"factor": 1.2, "plus": "50ms"},
            },
        },
        {
            "name": "m-count",
            "kind": "metric",
            "metric": {
                "type": "request_count",
                "max": 1000,
                "min": 1,
                "baseline": {"factor": 2, "plus": 10},
            },
        },
    ],
}


def _members(annotation: Any) -> list[Any]:
    """A field's annotation as plain members: Annotated, Optional and unions unwrapped."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(annotation) for m in _members(a)]
    return [annotation]


def _is_number(annotation: Any) -> bool:
    for member in _members(annotation):
        if member in (int, float):
            return True
        if typing.get_origin(member) is typing.Literal:
            return any(type(arg) is int for arg in typing.get_args(member))
    return False


def _items(annotation: Any) -> Any | None:
    """The item annotation of a list field, if it is one."""
    for member in _members(annotation):
        if typing.get_origin(member) is list:
            return typing.get_args(member)[0]
    return None


def _models(annotation: Any) -> Iterator[type[BaseModel]]:
    for member in _members(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel):
            yield member
        elif typing.get_origin(member) in (list, dict):
            yield from _models(typing.get_args(member)[-1])


def numeric_fields() -> set[tuple[str, str]]:
    """(model, field) for every number the policy language has, found from the models."""
    found: set[tuple[str, str]] = set()
    todo, seen = [Policy], set()
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, field in model.model_fields.items():
            item = _items(field.annotation)
            if _is_number(field.annotation) or (item is not None and _is_number(item)):
                found.add((model.__name__, name))
            todo.extend(_models(field.annotation))
    return found


def numeric_paths(doc: dict[str, Any]) -> tuple[list[tuple[Any, ...]], set[tuple[str, str]]]:
    """Every place in ``doc`` that holds a number of the language (list items included)."""
    paths: list[tuple[Any, ...]] = []
    covered: set[tuple[str, str]] = set()

    def walk(node: Any, loc: tuple[Any, ...]) -> None:
        if isinstance(node, dict):
            model = model_at(loc, doc)
            for key, value in node.items():
                field = model.model_fields.get(key) if model else None
                if model is not None and field is None and key == "expect":
                    field = model.model_fields.get("events")
                if model is not None and field is not None:
                    item = _items(field.annotation)
                    if _is_number(field.annotation):
                        paths.append((*loc, key))
                        covered.add((model.__name__, key))
                    elif item is not None and _is_number(item):
                        paths.extend((*loc, key, i) for i in range(len(value)))
                        covered.add((model.__name__, key))
                walk(value, (*loc, key))
        elif isinstance(node, list):
            for index, item in enumerate(node):
                walk(item, (*loc, index))

    walk(doc, ())
    return paths, covered


PATHS, COVERED = numeric_paths(FULL)
NON_FINITE: list[Any] = [
    math.nan,
    math.inf,
    -math.inf,
    "nan",
    "inf",
    "-Infinity",
    ".inf",
    "9" * 400 + "s",  # a duration whose seconds overflow to inf
    "9" * 400 + "%",  # a ratio that overflows to inf
]


def _dump(data: Any) -> str:
    out = io.StringIO()
    YAML(typ="safe").dump(data, out)
    return out.getvalue()


def _set(doc: Any, loc: tuple[Any, ...], value: Any) -> Any:
    doc = copy.deepcopy(doc)
    parent = doc
    for part in loc[:-1]:
        parent = parent[part]
    parent[loc[-1]] = value
    return doc


def test_the_full_document_is_valid_and_writes_every_numeric_field() -> None:
    """The property below covers every number the models have, not a hand-kept list."""
    assert isinstance(parse_policy(_dump(FULL), "p.yaml"), Policy)
    assert numeric_fields() == COVERED
    assert len(PATHS) > 30


@pytest.mark.fault(
    "policy", "NaN, inf or an overflowing number in any numeric field", "refused at its place"
)
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(loc=st.sampled_from(PATHS), value=st.sampled_from(NON_FINITE))
def test_no_numeric_field_accepts_a_non_finite_number(loc: tuple[Any, ...], value: Any) -> None:
    """``factor: .inf`` once passed a 100 % error rate and ``plus: .nan`` a 60 s p99."""
    with pytest.raises(PolicyError) as info:
        parse_policy(_dump(_set(FULL, loc, value)), "p.yaml")
    assert format_path(loc) in {p.path for p in info.value.problems}, info.value.problems
    # Built from Python (bare seconds allowed), the models refuse it too.
    with pytest.raises(ValidationError):
        Policy.model_validate(_set(FULL, loc, value))


@pytest.mark.parametrize(
    ("loc", "value"),
    [
        (("rules", 3, "metric", "baseline", "factor"), math.inf),
        (("rules", 4, "metric", "baseline", "plus"), math.nan),
        (("rules", 5, "metric", "max"), math.inf),
        (("rules", 2, "logs", "relative_to_baseline"), math.inf),
    ],
)
def test_the_message_says_a_threshold_must_be_finite(loc: tuple[Any, ...], value: Any) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(_dump(_set(FULL, loc, value)), "p.yaml")
    [problem] = info.value.problems
    assert problem.path == format_path(loc)
    assert problem.message == (
        f"{value} is not a finite number; thresholds, factors and limits must be finite "
        "(to set no limit, leave the key out)"
    )


# --------------------------------------------------------------------------- characters

HEAD = "version: 1\nname: demo\nservices: [demo]\nrules:\n"


def _problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "p.yaml")
    return [str(p) for p in info.value.problems]


@pytest.mark.fault(
    "policy", "raw control character (NUL, BEL, ESC) in the file", "one line at its line:col"
)
@pytest.mark.parametrize(("char", "name"), [("\x07", "BEL"), ("\x00", "NUL"), ("\x1b", "ESC")])
def test_a_control_character_is_reported_at_its_place(char: str, name: str) -> None:
    text = HEAD + f"  - name: up\n    kind: http\n    http: {{path: /he{char}alth}}\n"
    code = f"U+{ord(char):04X}"
    assert _problems(text) == [
        f"p.yaml:7:21: rules[0].http.path: control character {code} ({name}) is not allowed "
        "in a policy file (YAML refuses it): remove it"
    ]


def test_every_control_character_is_reported_and_one_in_a_comment_has_no_path() -> None:
    text = (
        "version: 1\nname: demo  # a \x07 in a comment\nservices: [demo]\nrules:\n"
        "  - name: u\x00p\n    kind: http\n    ht\x1btp: {path: /}\n"
    )
    problems = [p.split(": control character")[0] for p in _problems(text)]
    assert problems == ["p.yaml:2:17", "p.yaml:5:12: rules[0].name", "p.yaml:7:7: rules[0]"]


def test_a_binary_file_gets_ten_positions_and_a_count() -> None:
    problems = _problems("name: x\n" + "\x00" * 30 + "\n")
    assert len(problems) == 11
    assert problems[0].startswith("p.yaml:2:1: control character U+0000 (NUL)")
    assert problems[-1] == "p.yaml:2:11: 20 more control characters from here; is this a text file?"


@pytest.mark.fault(
    "policy", "value with newlines forging file:line:col lines", "quoted, escaped, one line"
)
def test_a_value_cannot_forge_lines_of_validate_output(write: Callable[[str, str], Path]) -> None:
    forged = "\\nfake.yaml:1:1: rules[0]: forged\\r\\u2028fake.yaml:2:2: x\\x85y\\e[2J"
    path = write(HEAD + f'  - name: up\n    kind: http\n    http: {{path: "x{forged}"}}\n')
    result = CliRunner().invoke(cli, ["policy", "validate", str(path)])
    assert result.exit_code == ExitCode.USAGE
    lines = result.stdout.splitlines()
    assert len(lines) == 2, lines  # one problem, one summary
    assert lines[0] == (
        f'{path}:7:18: rules[0].http.path: "x\\nfake.yaml:1:1: rules[0]: forged\\r\\u2028'
        'fake.yaml:2:2: x\\x85y\\x1b[2J" must start with "/" (it is appended to the service URL)'
    )
    assert lines[1] == "1 problem in 1 policy file"


def test_a_file_name_cannot_forge_lines_either(tmp_path: Path) -> None:
    path = tmp_path / "a\nfake.yaml:1:1: forged.yaml"
    path.write_text("name: x\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["policy", "validate", str(path)])
    assert result.exit_code == ExitCode.USAGE
    assert len(result.stdout.splitlines()) == 3  # two problems, one summary
    assert all("\\nfake.yaml:1:1" in line for line in result.stdout.splitlines()[:2])


def test_a_long_value_is_cut_in_messages() -> None:
    [problem] = _problems(
        HEAD + f"  - name: up\n    kind: http\n    http: {{path: {'x' * 5000}}}\n"
    )
    assert problem.endswith(
        'xxx"... (5000 characters) must start with "/" (it is appended to the service URL)'
    )
    assert len(problem) < 300


# --------------------------------------------------------------------------- cannot work

HTTP = HEAD + "  - name: up\n    kind: http\n    http: {%s}\n"
WS = HEAD + "  - name: ws\n    kind: websocket\n    websocket: {%s}\n"
LOGS = HEAD + "  - name: logs\n    kind: logs\n    logs: {%s}\n"
METRIC = HEAD + "  - name: m\n    kind: metric\n    metric: {%s}\n"
RULE = "rules[0]."
STEPS = (
    HEAD.replace("rules:", "rollout:\n  steps: [%s]\nrules:")
    + "  - {name: a, kind: logs, logs: {}}\n"
)
LAG = HEAD.replace(
    "rules:", "rollout:\n  steps: [{percent: 10, duration: 5m}]\n  metric_lag: %s\nrules:"
)
LAG += "  - {name: a, kind: logs, logs: {}}\n"
STEP = "rollout.steps[0]."

#: The rollout's fields (#11): percents, durations, metric_lag, every_step.
ROLLOUT_CASES = [
    pytest.param(
        STEPS % "{percent: 0, duration: 2m}",
        STEP + "percent",
        "0% gives the candidate no traffic to judge: a step's percent is 1 to 99",
        id="step-percent-0",
    ),
    pytest.param(
        STEPS % "{percent: -5, duration: 2m}",
        STEP + "percent",
        "-5% gives the candidate no traffic to judge",
        id="step-percent-negative",
    ),
    pytest.param(
        STEPS % "{percent: 100, duration: 2m}",
        STEP + "percent",
        "100% is not a step: after its last step the rollout sends 100% to the candidate itself",
        id="step-percent-100",
    ),
    pytest.param(
        STEPS % f"{{percent: {10**30}, duration: 2m}}",
        STEP + "percent",
        f"{10**30}% is not a step",
        id="step-percent-huge",
    ),
    pytest.param(
        STEPS % "{percent: ten, duration: 2m}",
        STEP + "percent",
        '"ten" is not a whole number',
        id="step-percent-text",
    ),
    pytest.param(
        STEPS % '{percent: "10%", duration: 2m}',
        STEP + "percent",
        '"10%" is not a whole number: write the percent without % (10, not 10%)',
        id="step-percent-with-sign",
    ),
    pytest.param(
        STEPS % "{percent: true, duration: 2m}",
        STEP + "percent",
        "true is not a whole number",
        id="step-percent-bool",
    ),
    pytest.param(
        STEPS % "{percent: 12.5, duration: 2m}",
        STEP + "percent",
        "12.5 is not a whole number",
        id="step-percent-fraction",
    ),
    pytest.param(
        STEPS % "{percent: .nan, duration: 2m}",
        STEP + "percent",
        "nan is not a finite number",
        id="step-percent-nan",
    ),
    pytest.param(
        STEPS % "{percent: 10, duration: 0s}",
        STEP + "duration",
        "0s cannot work: give a duration above 0",
        id="step-duration-0",
    ),
    pytest.param(
        STEPS % "{percent: 10, duration: -2m}",
        STEP + "duration",
        '"-2m" is not a duration (use 60s, 2m)',
        id="step-duration-negative",
    ),
    pytest.param(
        STEPS % "{percent: 10, duration: 25h}",
        STEP + "duration",
        '"25h" is longer than 24h, the longest duration a policy may use',
        id="step-duration-over-a-day",
    ),
    pytest.param(
        STEPS % "{percent: 10, duration: 120}",
        STEP + "duration",
        "120 is not a duration (use 60s, 2m)",
        id="step-duration-bare-number",
    ),
    pytest.param(
        STEPS % "{percent: 10, duration: .inf}",
        STEP + "duration",
        "inf is not a duration",
        id="step-duration-inf",
    ),
    pytest.param(
        STEPS % "{percent: 50, duration: 2m}, {percent: 10, duration: 2m}",
        "rollout.steps[1].percent",
        "step 2 (10%) is not above step 1 (50%): each step gives the candidate more traffic "
        "than the one before (10, 50, ...)",
        id="steps-going-down",
    ),
    pytest.param(
        STEPS % "{percent: 10, duration: 2m}, {percent: 10, duration: 5m}",
        "rollout.steps[1].percent",
        "step 2 (10%) is not above step 1 (10%)",
        id="steps-repeating-a-percent",
    ),
    pytest.param(
        STEPS % ", ".join(f"{{percent: {n}, duration: 1m}}" for n in range(1, 22)),
        "rollout.steps",
        "21 steps are more than a rollout may have (at most 20)",
        id="steps-21",
    ),
    pytest.param(
        STEPS % "",
        "rollout.steps",
        "give at least one step (or leave rollout out and pass rollout --steps)",
        id="steps-none",
    ),
    pytest.param(
        LAG % "2h",
        "rollout.metric_lag",
        "2h is longer than 1h: Cloud Monitoring shows a Cloud Run point at most 3m after",
        id="metric-lag-over-an-hour",
    ),
    pytest.param(
        LAG % "-1s", "rollout.metric_lag", '"-1s" is not a duration', id="metric-lag-negative"
    ),
    pytest.param(LAG % ".inf", "rollout.metric_lag", "inf is not a duration", id="metric-lag-inf"),
    pytest.param(
        LAG % ('"' + "9" * 400 + 's"'),
        "rollout.metric_lag",
        "is longer than 24h",
        id="metric-lag-overflowing",
    ),
    pytest.param(LAG % "3", "rollout.metric_lag", "3 is not a duration", id="metric-lag-bare"),
    pytest.param(
        HEAD + "  - {name: a, kind: logs, every_step: false, logs: {}}\n",
        RULE + "every_step",
        "every_step belongs to http and websocket rules (a probe may run only before the first "
        "step); logs and metric rules are judged at every step",
        id="every-step-false-on-logs",
    ),
    pytest.param(
        METRIC.replace("kind: metric", "kind: metric\n    every_step: false")
        % "type: error_rate, max: 1%",
        RULE + "every_step",
        "drop every_step from this metric rule",
        id="every-step-false-on-a-metric",
    ),
    pytest.param(
        HEAD + "  - {name: a, kind: logs, every_step: nope, logs: {}}\n",
        RULE + "every_step",
        '"nope" is not true or false',
        id="every-step-text",
    ),
    pytest.param(
        HEAD.replace("rules:", "rollout: {steps: [{percent: 10, duration: 5m}]}\nrules:")
        + "  - {name: up, kind: http, every_step: false, http: {}}\n"
        + "  - {name: ws, kind: websocket, every_step: false, websocket: {}}\n",
        "rollout",
        "the rollout's steps would judge nothing: every rule is an http or websocket rule with "
        "every_step: false, and missing evidence is never a pass",
        id="steps-that-judge-nothing",
    ),
]


@pytest.mark.fault(
    "policy", "values that parse but cannot work (surrogates, 0s, empty...)", "refused at load"
)
@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        pytest.param(
            LOGS % 'patterns: ["\\ud83d"]',
            RULE + "logs.patterns[0]",
            '"\\ud83d" holds a lone surrogate (\\ud83d), which is not a character: write the '
            "character itself or its full escape (\\U0001F600, not \\ud83d\\ude00)",
            id="lone-surrogate-pattern",
        ),
        pytest.param(
            HTTP % 'headers: {X-Emoji: "\\ud83d\\ude00"}',
            RULE + "http.headers.X-Emoji",
            '"\\ud83d\\ude00" holds a lone surrogate',
            id="surrogate-pair-escape-header",
        ),
        pytest.param(
            LOGS % 'filter: "textPayload:\\"\\udc00\\""',
            RULE + "logs.filter",
            "holds a lone surrogate",
            id="surrogate-filter",
        ),
        pytest.param(
            WS % "ping_interval: 0s",
            RULE + "websocket.ping_interval",
            "0s cannot work: give a duration above 0",
            id="ping-interval-0",
        ),
        pytest.param(HTTP % "timeout: 0s", RULE + "http.timeout", "0s cannot work", id="timeout-0"),
        pytest.param(
            HTTP % "expect: {max_latency: 0ms}",
            RULE + "http.expect.max_latency",
            "0s cannot work",
            id="max-latency-0",
        ),
        pytest.param(
            WS % "connect_timeout: 0s",
            RULE + "websocket.connect_timeout",
            "0s cannot work",
            id="connect-timeout-0",
        ),
        pytest.param(
            WS % "scenario: [{expect: [a], timeout: 0s}]",
            RULE + "websocket.scenario[0].timeout",
            "0s cannot work",
            id="expect-timeout-0",
        ),
        pytest.param(
            METRIC % "type: error_rate, max: 1%, window: 0s",
            RULE + "metric.window",
            "0s cannot work",
            id="window-0",
        ),
        pytest.param(
            HEAD.replace("rules:", "timeout: 0s\nrules:") + "  - {name: a, kind: logs, logs: {}}\n",
            "timeout",
            "0s cannot work",
            id="policy-timeout-0",
        ),
        pytest.param(
            HEAD.replace("rules:", "evidence_window: 25h\nrules:")
            + "  - {name: a, kind: logs, logs: {}}\n",
            "evidence_window",
            '"25h" is longer than 24h, the longest duration a policy may use',
            id="duration-over-a-day",
        ),
        pytest.param(
            HEAD.replace("rules:", "timeout: 3h\nrules:") + "  - name: ws\n    kind: websocket\n"
            "    websocket: {hold: 2h}\n",
            RULE + "websocket.hold",
            "is out of range (must be at most 3600.0)",
            id="hold-beyond-cloud-run-request-timeout",
        ),
        pytest.param(
            LOGS % 'patterns: ["error", ""]',
            RULE + "logs.patterns[1]",
            "an empty pattern matches every entry: to count every entry the filter selects, "
            "leave patterns out",
            id="empty-pattern",
        ),
        pytest.param(
            LOGS % "patterns: ['a++']",
            RULE + "logs.patterns[0]",
            '"a++" uses a possessive quantifier (*+, ++, ?+), which Cloud Logging (RE2) does '
            "not support",
            id="possessive-quantifier",
        ),
        pytest.param(
            LOGS % "patterns: ['(?>a)b']",
            RULE + "logs.patterns[0]",
            "uses an atomic group",
            id="atomic-group",
        ),
        pytest.param(
            LOGS % "patterns: ['end\\Z']",
            RULE + "logs.patterns[0]",
            '"end\\\\Z" uses \\Z (write $ instead)',
            id="backslash-Z",
        ),
        pytest.param(
            HTTP % 'expect: {body_contains: ""}',
            RULE + "http.expect.body_contains",
            "must not be empty",
            id="empty-body-contains",
        ),
        pytest.param(
            HTTP % "method: HEAD, expect: {body_contains: ok}",
            RULE + "http.expect.body_contains",
            "a HEAD response has no body, so expect.body_contains can never match: use GET, "
            "or drop it",
            id="head-with-body-check",
        ),
        pytest.param(
            HTTP % 'headers: {"X Bad": v}',
            RULE + 'http.headers["X Bad"]',
            '"X Bad" is not a header name (letters, digits and !#$%&\'*+-.^_`|~ only)',
            id="header-name-space",
        ),
        pytest.param(
            HTTP % 'headers: {X-A: "v\\r\\nX-Injected: 1"}',
            RULE + "http.headers.X-A",
            '"v\\r\\nX-Injected: 1" holds a tab or line break, which cannot work here: remove it',
            id="header-injection",
        ),
        pytest.param(
            HTTP % "headers: {X-A: café}",
            RULE + "http.headers.X-A",
            "is not ASCII, which HTTP header values must be",
            id="header-non-ascii",
        ),
        pytest.param(
            HTTP % 'path: "/a\\eb"',
            RULE + "http.path",
            "holds the control character U+001B, which cannot work here: remove it",
            id="escaped-control-in-path",
        ),
        pytest.param(
            WS % 'subprotocols: ["chat v2"]',
            RULE + "websocket.subprotocols[0]",
            "is not a valid name",
            id="subprotocol-not-a-token",
        ),
        pytest.param(
            HEAD.replace("[demo]", "[Chat-Agent]") + "  - {name: a, kind: logs, logs: {}}\n",
            "services[0]",
            '"Chat-Agent" can never match a Cloud Run service name (lowercase letters, digits '
            "and -; globs may add * ? [ ] !)",
            id="service-glob-uppercase",
        ),
        pytest.param(
            HEAD.replace("rules:", 'auth: {audience: ""}\nrules:')
            + "  - {name: a, kind: logs, logs: {}}\n",
            "auth.audience",
            "must not be empty",
            id="empty-audience",
        ),
        pytest.param(
            HTTP % "success_ratio: 0%",
            RULE + "http.success_ratio",
            "0% passes even when every attempt fails",
            id="success-ratio-0",
        ),
        pytest.param(
            LOGS % ("patterns: ['%s']" % ("x" * 9600)),
            RULE + "logs",
            "Logging refuses queries over 20,000",
            id="log-query-too-long",
        ),
        pytest.param(
            HTTP % "path: //evil.example/x",
            RULE + "http.path",
            "starts with //, which a URL reads as a host name",
            id="path-naming-a-host",
        ),
        pytest.param(
            WS % 'path: "/ws#chat"',
            RULE + "websocket.path",
            "has a #fragment, which is never sent to the server",
            id="path-with-fragment",
        ),
        pytest.param(
            HTTP % "expect: {status: [100]}",
            RULE + "http.expect.status[0]",
            "100 is an interim answer (1xx)",
            id="interim-status",
        ),
        pytest.param(
            LOGS % """filter: 'severity>=ERROR AND resource.labels.revision_name="chat-00001"'""",
            RULE + "logs.filter",
            "resource.labels.revision_name is deploy-guard's to set",
            id="filter-narrows-the-revision-scope",
        ),
        pytest.param(
            LOGS % """filter: 'timestamp>="2020-01-01T00:00:00Z"'""",
            RULE + "logs.filter",
            "timestamp is deploy-guard's to set",
            id="filter-sets-its-own-time-bound",
        ),
        pytest.param(
            HEAD.replace("[demo]", "[1chat]") + "  - {name: a, kind: logs, logs: {}}\n",
            "services[0]",
            "a name starts with a letter, ends with a letter or digit and has at most 49",
            id="service-name-impossible",
        ),
        pytest.param(
            HEAD.replace("rules:", "auth: {id_token: none, audience: x}\nrules:")
            + "  - {name: a, kind: logs, logs: {}}\n",
            "auth.audience",
            "no ID token is minted: drop audience",
            id="audience-without-id-token",
        ),
        pytest.param(
            HEAD + "  - {name: a, kind: http, failure_limit: 1, http: {}}\n",
            RULE + "failure_limit",
            "a http rule runs once: tolerate failures with success_ratio instead",
            id="failure-limit-on-a-probe",
        ),
        pytest.param(
            METRIC % "type: request_count, min: 10, max: 5",
            RULE + "metric.min",
            "min 10 is above max 5: no request count can pass",
            id="min-above-max",
        ),
        pytest.param(
            METRIC % "type: error_rate, max: 100%",
            RULE + "metric.max",
            "an error rate of 100% passes even when every request fails",
            id="error-rate-100",
        ),
        pytest.param(
            METRIC % "type: latency, baseline: {plus: -5}",
            RULE + "metric.baseline.plus",
            "-5 is negative",
            id="negative-plus",
        ),
        *ROLLOUT_CASES,
        pytest.param(
            WS % "scenario: [{send: {json: {x: .nan}}}]",
            RULE + "websocket.scenario[0].json.x",
            "nan is not a finite number",
            id="nan-in-a-json-message",
        ),
    ],
)
def test_what_cannot_work_is_refused_with_the_fix(text: str, path: str, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "p.yaml")
    found = [(p.path, p.message) for p in info.value.problems]
    assert any(p == path and message in m for p, m in found), found
    assert all(str(p).count("\n") == 0 for p in info.value.problems)


# --------------------------------------------------------------------------- fuzz

SHIPPED = [
    YAML(typ="safe").load(path.read_text("utf-8"))
    for path in sorted((Path(__file__).resolve().parents[2] / "policies").glob("*.yaml"))
] + [FULL]  # the shipped policies have no rollout: FULL brings its fields into the fuzz
HOSTILE: list[Any] = [
    math.nan,
    math.inf,
    -math.inf,
    10**30,
    -1,
    0,
    1e308,
    "",
    "0s",
    "25h",
    "9" * 400 + "s",
    "9" * 400 + "%",
    "\ud83d",
    "\ud83d\ude00",
    "a\x00b",
    "\x1b[2J",
    "x\nfake.yaml:1:1: rules[0]: forged",
    "\u202eevil",
    "{unknown}",
    "${BAD NAME}",
    "x" * 3000,
    "(?=x)",
    "a++",
    True,
    None,
    {},
    [],
    {"nested": [{"deep": [math.nan]}]},
]
RAW = [
    "\x00",
    "\x07",
    "\x1b",
    "\x7f",
    "\ufffe",
    "\n",
    ":",
    "- ",
    "{",
    "&a ",
    "*a",
    "!!python/object ",
]


def _paths_of(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths_of(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths_of(value, (*prefix, index))
    return found


def _mutated(data: st.DataObject) -> str:
    """A shipped policy with 1-3 values replaced by hostile ones, then raw bytes spliced in."""
    doc = data.draw(st.sampled_from(SHIPPED))
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        loc = data.draw(st.sampled_from(_paths_of(doc)[1:]))
        doc = _set(doc, loc, data.draw(st.sampled_from(HOSTILE)))
    out = io.StringIO()
    yaml = YAML(typ="safe")
    yaml.allow_unicode = False  # lone surrogates and controls written as escapes
    yaml.dump(doc, out)
    text = out.getvalue()
    for _ in range(data.draw(st.integers(min_value=0, max_value=2))):
        at = data.draw(st.integers(min_value=0, max_value=len(text)))
        text = text[:at] + data.draw(st.sampled_from(RAW)) + text[at:]
    return text


@pytest.mark.fault(
    "policy", "mutated shipped policies (hostile values, raw bytes)", "Policy or problems, exit 0/2"
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_policies_never_crash_the_loader_or_validate(
    data: st.DataObject, tmp_path_factory: pytest.TempPathFactory
) -> None:
    text = _mutated(data)
    lines = text.count("\n") + 1
    warnings: list[Problem] = []
    try:
        policy = parse_policy(text, "p.yaml")
        assert isinstance(policy, Policy)
        problems = []
        warnings = policy_warnings(policy)
    except PolicyError as exc:
        problems = exc.problems
        assert problems
    for problem in problems:
        assert 1 <= problem.line <= lines, problem
        assert problem.column >= 1, problem
        assert problem.message
    # The command prints one line per problem and a summary: exit 0 or 2, never 1 or a traceback.
    file = tmp_path_factory.mktemp("fuzz") / "p.yaml"
    file.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(cli, ["policy", "validate", str(file)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == (ExitCode.USAGE if problems else ExitCode.PASS), result.output
    out = result.stdout.splitlines()
    assert "internal error" not in result.stdout
    assert len(out) == len(problems) + len(warnings) + 1, out
    assert all(line.startswith(f"{file}:") for line in out[:-1]), out


@pytest.mark.fault(
    "policy",
    "a lone surrogate in a log pattern (every log read used to fail: exit 3)",
    "check exits 2 before any API call",
)
def test_check_refuses_a_surrogate_pattern_before_any_api_call(
    emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once, such a pattern made every ListLogEntries fail client-side: 0 calls, exit 3."""
    monkeypatch.setenv("DEPLOY_GUARD_EMULATOR_HOST", emulator.address)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", emulator.project)
    monkeypatch.setenv("CLOUDSDK_RUN_REGION", emulator.region)
    policy = tmp_path / "logs.yaml"
    policy.write_text(LOGS % r'patterns: ["boom \ud83d"]', encoding="utf-8")
    emulator.faults.reset_counts()
    result = CliRunner().invoke(
        cli, ["check", "--revision", "chat-00002-abc", "--policy", str(policy)]
    )
    assert result.exit_code == ExitCode.USAGE, result.output
    assert f"{policy}:7:23: rules[0].logs.patterns[0]: " in result.output
    assert "lone surrogate" in result.output
    assert emulator.faults.counts() == {}


@pytest.mark.fault("policy", "a huge file named as a policy", "refused without reading it whole")
def test_a_huge_file_is_refused_unread(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"description: " + b"a" * 2_000_000 + b"\n")
    result = CliRunner().invoke(cli, ["policy", "validate", str(big)])
    assert result.exit_code == ExitCode.USAGE
    assert result.stdout.splitlines()[0] == (
        f"{big}: the file is over 1,000,000 bytes; a policy is a few kilobytes"
    )


def test_a_policy_from_a_pipe_still_loads(tmp_path: Path) -> None:
    """Process substitution (``<(generate-policy)``) hands over a pipe, not a regular file."""
    read, write = os.pipe()
    os.write(write, (HEAD + "  - {name: a, kind: logs, logs: {}}\n").encode())
    os.close(write)
    try:
        result = CliRunner().invoke(cli, ["policy", "validate", f"/dev/fd/{read}"])
    finally:
        os.close(read)
    assert result.exit_code == ExitCode.PASS, result.output


def test_explain_quotes_free_text_on_one_line() -> None:
    from deploy_guard.policy.explain import explain

    policy = parse_policy(
        HTTP % 'expect: {body_contains: "ok\\nfake line"}'
        + "  - {name: ws, kind: websocket, websocket: "
        + '{scenario: [{send: {text: "hi\\n\\"you\\""}}]}}\n'
    )
    words = explain(policy)
    assert 'the body contains "ok\\nfake line"' in words
    assert 'the text "hi\\n\\"you\\""' in words
    assert "fake line" not in words.replace('"ok\\nfake line"', "")
