"""``deploy-guard policy validate|schema|explain`` through click, with exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from deploy_guard.cli import cli
from deploy_guard.exitcodes import ExitCode

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "policies"
GOOD = """\
version: 1
name: good
services: [svc]
rules:
  - name: up
    kind: http
    http: {path: /}
"""


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def test_the_shipped_policies_are_valid() -> None:
    code, out, _ = run("policy", "validate", str(POLICIES))
    assert code == ExitCode.PASS
    assert out.strip() == "2 policy files valid"


def test_validate_outside_a_repository_says_where_to_run_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run("policy", "validate")
    assert code == ExitCode.USAGE
    assert out == ""
    assert "no policies/ folder here: run it from your repository's root" in err


def test_validate_defaults_to_policies_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "good.yaml").write_text(GOOD, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    code, out, _ = run("policy", "validate")
    assert code == 0
    assert out.strip() == "1 policy file valid"


def test_validate_reports_every_problem_and_exits_2(
    write: Callable[[str, str], Path], tmp_path: Path
) -> None:
    write(GOOD, "good.yaml")
    write(GOOD.replace("name: good", "name: bad").replace("path: /}", "path: /, x: 1}"), "bad.yaml")
    write("rules: [\n", "broken.yaml")
    code, out, _ = run("policy", "validate", str(tmp_path))
    assert code == ExitCode.USAGE
    lines = out.strip().splitlines()
    assert lines == [
        f'{tmp_path}/bad.yaml:7:21: rules[0].http.x: unknown key "x" (allowed: method, path, '
        "headers, body, json, timeout, requests, concurrency, rate, ramp, expect, "
        "success_ratio)",
        f"{tmp_path}/broken.yaml:2:1: invalid YAML: while parsing a flow node expected the node "
        "content, but found '<stream end>'",
        "2 problems in 2 of 3 policy files; 1 valid",
    ]
    assert "Traceback" not in out


def test_validate_files_and_folders_together(
    write: Callable[[str, str], Path], tmp_path: Path
) -> None:
    extra = write(GOOD, "extra.yaml")
    code, out, _ = run("policy", "validate", str(POLICIES), str(extra))
    assert code == 0
    assert out.strip() == "3 policy files valid"


def test_validate_a_missing_path_is_a_problem(tmp_path: Path) -> None:
    code, out, _ = run("policy", "validate", str(tmp_path / "nope.yaml"))
    assert code == ExitCode.USAGE
    # about the whole file: no line and column to point at
    assert f"{tmp_path}/nope.yaml: no such file or folder" in out
    assert ":1:1" not in out


def test_validate_json_output_for_tools(write: Callable[[str, str], Path]) -> None:
    bad = write("name: x\n", "x.yaml")
    code, out, err = run("policy", "validate", "--json", str(bad))
    assert code == ExitCode.USAGE
    problems = json.loads(out)
    assert [(p["path"], p["line"], p["column"]) for p in problems] == [
        ("rules", 1, 1),
        ("services", 1, 1),
    ]
    assert err.strip() == "2 problems in 1 policy file"


@pytest.mark.parametrize(
    ("files", "extra", "summary"),
    [
        (["bad"], [], "2 problems in 1 policy file"),
        (["bad", "bad2"], [], "4 problems in 2 policy files; none valid"),
        (["good", "bad"], [], "2 problems in 1 of 2 policy files; 1 valid"),
        (["good", "twin"], [], "1 problem in 1 of 2 policy files; 1 valid"),
        ([], ["nope.yaml"], "1 problem; no policy file was read"),
        (["good"], ["nope.yaml"], "1 problem; 1 policy file valid"),
        (["bad"], ["nope.yaml"], "2 problems in 1 policy file; 1 other problem"),
        (["good", "other"], [], "2 policy files valid"),
    ],
)
def test_validate_summary_counts_in_plain_grammar(
    write: Callable[[str, str], Path],
    tmp_path: Path,
    files: list[str],
    extra: list[str],
    summary: str,
) -> None:
    """Each number says what it counts: never "1 of 1 policy files" or "0 valid"."""
    texts = {
        "good": GOOD,
        "other": GOOD.replace("name: good", "name: other"),
        "twin": GOOD,  # the same policy name twice: one problem, in the second file
        "bad": "name: x\n",  # no services, no rules: two problems
        "bad2": "name: y\n",
    }
    paths = [str(write(texts[name], f"{name}.yaml")) for name in files]
    paths += [str(tmp_path / name) for name in extra]
    code, out, _ = run("policy", "validate", *paths)
    assert code == (ExitCode.USAGE if "problem" in summary else ExitCode.PASS)
    assert out.strip().splitlines()[-1] == summary


def test_schema_prints_json_schema() -> None:
    code, out, _ = run("policy", "schema")
    assert code == 0
    schema = json.loads(out)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert "rules" in schema["properties"]


def test_explain_says_what_the_chat_policy_does() -> None:
    code, out, _ = run("policy", "explain", str(POLICIES / "chat-agent.yaml"))
    assert code == 0
    assert "Policy chat-agent" in out
    assert "4. chat-hold (websocket, fail)" in out
    assert "keeps the connection open for 60s" in out
    assert "On fail: put traffic back on the revisions that served before." in out
    assert "Fails above 1.2 x the previous revision's p99 request latency + 50ms." in out


def test_explain_a_folder_is_a_usage_error_naming_it() -> None:
    code, _out, err = run("policy", "explain", str(POLICIES))
    assert code == ExitCode.USAGE
    assert "is a directory" in err


def test_policy_help_lists_each_command_in_full() -> None:
    code, out, _ = run("policy", "--help")
    assert code == 0
    assert "..." not in out.split("Commands:")[1]  # no one-line help cut short
    assert "Print the JSON Schema of policy files (for editors)." in out


def test_explain_an_invalid_file_prints_problems_and_exits_2(
    write: Callable[[str, str], Path],
) -> None:
    bad = write("name: x\n", "x.yaml")
    code, out, err = run("policy", "explain", str(bad))
    assert code == ExitCode.USAGE
    assert out == ""
    assert f'{bad}:1:1: services: "services" is required' in err


@pytest.mark.parametrize("argv", [["policy", "validate", "policies/"], ["policy", "schema"]])
def test_policy_commands_import_no_google_library(argv: list[str]) -> None:
    code = (
        "import sys\n"
        "from deploy_guard.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('google', 'grpc')))\n"
        "print('LOADED=' + ','.join(loaded))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout
    assert out.rsplit("LOADED=", 1)[1].strip() == ""
