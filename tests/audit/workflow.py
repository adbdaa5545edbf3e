"""``deploy/audit/workflow.yaml`` run on an event, as far as the tests need: what it hands the job.

No Workflows runtime is reachable from here, so this evaluates the workflow's steps with
the few expression forms it uses, and refuses any other form (a test then fails, rather
than a new expression going untested): ``sys.get_env("X")``, ``map.get(m, "k")`` and
``map.get(m, ["k1", "k2"])`` (null when a key or a map is missing, as the standard library
documents), ``json.encode_to_string(x)``, string literals joined with ``+``, variables,
and ``a.b.c`` field access. Python's own parser reads them: the forms are valid Python.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

WORKFLOW = Path(__file__).resolve().parents[2] / "deploy" / "audit" / "workflow.yaml"
_EXPR = re.compile(r"^\$\{(.*)\}$", re.S)


def load() -> dict[str, Any]:
    doc: dict[str, Any] = YAML(typ="safe", pure=True).load(WORKFLOW.read_text(encoding="utf-8"))
    return doc


def steps(doc: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The main workflow's steps by name, in order."""
    doc = doc or load()
    return {name: body for step in doc["main"]["steps"] for name, body in step.items()}


class Unsupported(AssertionError):
    """An expression form this evaluator does not know: teach it, or keep the workflow simple."""


def evaluate(value: Any, scope: dict[str, Any], env: dict[str, str]) -> Any:
    """A YAML value with its ``${...}`` expressions evaluated (maps and lists walked)."""
    if isinstance(value, dict):
        return {k: evaluate(v, scope, env) for k, v in value.items()}
    if isinstance(value, list):
        return [evaluate(v, scope, env) for v in value]
    if isinstance(value, str) and (m := _EXPR.match(value.strip())):
        return _eval(ast.parse(m.group(1), mode="eval").body, scope, env)
    return value


def _eval(node: ast.expr, scope: dict[str, Any], env: dict[str, str]) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, str | int | float):
        return node.value
    if isinstance(node, ast.List):
        return [_eval(e, scope, env) for e in node.elts]
    if isinstance(node, ast.Name):
        return scope[node.id]
    if isinstance(node, ast.Attribute):
        base = _eval(node.value, scope, env)
        return base[node.attr]  # a missing key raises, as it does in Workflows
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _eval(node.left, scope, env), _eval(node.right, scope, env)
        if not (isinstance(left, str) and isinstance(right, str)):
            raise Unsupported(f"+ on non-strings: {ast.unparse(node)}")
        return left + right
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        func = ast.unparse(node.func)
        args = [_eval(a, scope, env) for a in node.args]
        if func == "sys.get_env" and len(args) == 1:
            return env.get(args[0])
        if func == "map.get" and len(args) == 2:
            keys = args[1] if isinstance(args[1], list) else [args[1]]
            found = args[0]
            for key in keys:
                found = found.get(key) if isinstance(found, dict) else None
            return found
        if func == "json.encode_to_string" and len(args) == 1:
            return json.dumps(args[0], separators=(",", ":"))
    raise Unsupported(f"expression form not evaluated here: {ast.unparse(node)}")


def run(event: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """The ``run_job`` step's call and arguments after the steps before it ran on ``event``."""
    doc = load()
    (param,) = doc["main"]["params"]
    scope: dict[str, Any] = {param: event}
    for name, body in steps(doc).items():
        if "assign" in body:
            for assignment in body["assign"]:
                for var, value in assignment.items():
                    scope[var] = evaluate(value, scope, env)
        elif "call" in body:
            return {"call": body["call"], "args": evaluate(body["args"], scope, env)}
        else:
            raise Unsupported(f"step {name}: only assign and call steps come before the job")
    raise AssertionError("the workflow never calls the job")


ENV = {"GOOGLE_CLOUD_PROJECT_ID": "local-project", "JOB_NAME": "deploy-guard-audit"}


def job_env(event: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment variables the workflow's run of the job overrides."""
    call = run(event, {**ENV, "JOB_REGION": "us-central1", **(env or {})})
    (override,) = call["args"]["body"]["overrides"]["containerOverrides"]
    return {e["name"]: e["value"] for e in override["env"]}


def trimmed_event(event: dict[str, Any]) -> str:
    """What the job finds in ``DEPLOY_GUARD_AUDIT_EVENT`` for this CloudEvent."""
    return job_env(event)["DEPLOY_GUARD_AUDIT_EVENT"]
