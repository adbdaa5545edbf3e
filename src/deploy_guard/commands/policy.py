"""``deploy-guard policy``: validate, explain and export the schema of policy files.

These commands touch no cloud API, so they import no Google library: a
pre-commit hook or an editor can run ``policy validate`` in well under a
second. Every problem is printed compiler-style (``file:line:col: path:
message``) and the exit code is 0 when all files are valid, 2 when not.
Warnings (``file:line:col: path: warning: message``) are printed the same way
and never change the exit code: a valid policy with warnings exits 0.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import click

from deploy_guard.errors import PolicyError
from deploy_guard.exitcodes import ExitCode
from deploy_guard.policy.lint import policy_warnings
from deploy_guard.policy.load import check_paths, load_file
from deploy_guard.policy.problems import Problem


@click.group("policy")
def policy() -> None:
    """Validate, explain and export the schema of policy files."""


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _summary(
    files: Sequence[Path], problems: Sequence[Problem], warnings: Sequence[Problem] = ()
) -> str:
    """The last line of ``policy validate``: "2 problems in 1 of 3 policy files; 2 valid".

    Problems outside the policy files read (a missing path, an empty folder)
    are counted apart, so every number says what it counts; warnings last.
    """
    text = _problems_summary(files, problems)
    return f"{text}; {_plural(len(warnings), 'warning')}" if warnings else text


def _problems_summary(files: Sequence[Path], problems: Sequence[Problem]) -> str:
    read = {str(f) for f in files if f.exists()}
    if not problems:
        return f"{_plural(len(read), 'policy file')} valid"
    if not read:
        return f"{_plural(len(problems), 'problem')}; no policy file was read"
    inside = [p for p in problems if p.file in read]
    bad = len({p.file for p in inside})
    valid = len(read) - bad
    others = len(problems) - len(inside)
    if not inside:
        return f"{_plural(others, 'problem')}; {_plural(valid, 'policy file')} valid"
    text = _plural(len(inside), "problem")
    if valid:
        text += f" in {bad} of {len(read)} policy files; {valid} valid"
    else:
        text += f" in {_plural(bad, 'policy file')}" + ("; none valid" if bad > 1 else "")
    if others:
        text += f"; {_plural(others, 'other problem')}"
    return text


@policy.command("validate", short_help="Check policy files or folders; report every problem.")
@click.argument("paths", nargs=-1, type=click.Path(path_type=str))
@click.option(
    "--json", "as_json", is_flag=True, help="Print the problems as a JSON list (for tools)."
)
def validate(paths: tuple[str, ...], as_json: bool) -> None:
    """Check policy files or folders (default: policies/) and report every problem.

    Exit 0 when every file is valid (warnings included), 2 when any is not.
    """
    targets = list(paths) or ["policies/"]
    if not paths and not Path("policies").is_dir():
        click.echo(
            "error: no policies/ folder here: run it from your repository's root, or name "
            "the policy files or folders (deploy-guard policy validate path/to/policy.yaml)",
            err=True,
        )
        raise SystemExit(int(ExitCode.USAGE))
    warnings: list[Problem] = []
    try:
        files, policies, problems = check_paths(targets)
        for loaded in policies:
            warnings.extend(policy_warnings(loaded))
    except Exception as exc:  # a bug must still not print a traceback at the user
        problems = [Problem(", ".join(targets), 1, 1, "", f"internal error: {exc!r}")]
        files = []
    shown = sorted([*problems, *warnings])
    if as_json:
        # line and column 0 mean "the whole file" (missing, unreadable): null for tools
        rows = [{**p.__dict__, "line": p.line or None, "column": p.column or None} for p in shown]
        click.echo(json.dumps(rows, indent=2))
    else:
        for problem in shown:
            click.echo(str(problem))
    click.echo(_summary(files, problems, warnings), err=as_json)
    if problems:
        raise SystemExit(int(ExitCode.USAGE))


@policy.command("schema", short_help="Print the JSON Schema of policy files (for editors).")
@click.option("--indent", default=2, show_default=True, help="JSON indentation.")
def schema(indent: int) -> None:
    """Print the JSON Schema (draft 2020-12) of policy files, for editors.

    \b
    deploy-guard policy schema > policy.schema.json
    then, first line of a policy:  # yaml-language-server: $schema=./policy.schema.json
    """
    from deploy_guard.policy.schema import policy_schema

    click.echo(json.dumps(policy_schema(), indent=indent or None))


@policy.command("explain", short_help="Say in plain words what a policy file will do.")
@click.argument("file", type=click.Path(dir_okay=False, path_type=str))
def explain(file: str) -> None:
    """Say in plain words what the policy in FILE will do.

    FILE is one policy file (policies/chat-agent.yaml); `policy validate`
    takes folders.
    """
    from deploy_guard.policy.explain import explain as explain_policy

    try:
        loaded = load_file(file)
    except PolicyError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        raise SystemExit(int(ExitCode.USAGE)) from None
    click.echo(explain_policy(loaded))
