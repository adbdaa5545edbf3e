"""``--html FILE.html``: the report as one page a person opens, from the report data alone.

One self-contained file: the CSS and the sessions picture (SVG) are inline, there
is no script at all, and nothing is loaded from anywhere (a Content-Security-Policy
in the page says so to the browser as well: even text that slipped through could
load nothing and run nothing). It can be attached to a build, mailed, or opened
from a bucket years later.

It renders the report's ``to_dict()`` document (secrets already redacted), or the
same document read back from a ``--report`` JSON file (``deploy-guard report``),
so a report written by any run, even one cut short, renders the same way; keys
an older report lacks are simply not shown. The page is a Jinja2 template
(``templates/report.html.j2``) with autoescaping always on: log lines, event
names, failure details and even rule names come from the service under test or
from a file, and none of it is trusted. This module only prepares plain values
for it; the geometry of the picture is :mod:`deploy_guard.report.picture`'s.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from deploy_guard import __version__
from deploy_guard.errors import ConfigError
from deploy_guard.report.cloud_deploy import phase_line
from deploy_guard.report.json import write_atomic
from deploy_guard.report.markdown import _ACTION_WORDS, _ROLLOUT_ACTION_WORDS
from deploy_guard.report.model import CheckReport, observed_text
from deploy_guard.report.picture import picture, seconds
from deploy_guard.report.steps import how_long, stage_names, stop_line, traffic_check, why

#: A verdict's colour on the page (its CSS class); anything unknown looks like an error.
_VERDICT_CLASS = {
    "pass": "pass",
    "warn": "warn",
    "fail": "fail",
    "inconclusive": "inconclusive",
    "error": "error",
    "skipped": "inconclusive",
}
_TITLES = {"check": "deploy-guard check", "rollout": "deploy-guard rollout"}
#: What the page shows of each notification's delivery (the report's ``notifications``).
_NOTIFICATION_FIELDS = ("at", "notifier", "event", "status", "attempts", "error")


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The templates, shipped as package data, with autoescaping on for every one of them."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("deploy_guard.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["seconds"] = lambda v: seconds(float(v)) if isinstance(v, int | float) else ""
    env.filters["split"] = _split
    return env


def render_html(document: dict[str, Any], *, live: bool = False) -> str:
    """The page for a report document (``CheckReport.to_dict()`` or a JSON report read back).

    ``live``: the ``--serve`` page of a run not over yet (no ``finished_at``), whose
    verdict and exit code are still the report's defaults: it heads RUNNING instead.
    """
    shown = page(document)
    if live and not document.get("finished_at"):
        shown.update(running=True, verdict="running", verdict_class="running")
    return environment().get_template("report.html.j2").render(page=shown)


def write_html(report: CheckReport | dict[str, Any], path: str | Path) -> Path:
    """Render and write atomically (a temporary file, then a rename), as the JSON report is."""
    document = report.to_dict() if isinstance(report, CheckReport) else report
    return write_atomic(path, render_html(document))


def read_report(path: str | Path) -> dict[str, Any]:
    """A ``--report`` JSON document read back; :class:`ConfigError` (exit 2) says what is wrong."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the report {path}: {exc.strerror or exc}") from None
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{path} is not JSON ({exc}): pass a file written by --report") from None
    if not isinstance(document, dict) or "verdict" not in document:
        raise ConfigError(
            f"{path} is not a deploy-guard report (no verdict): pass a file written by --report"
        )
    return document


def _split(split: Any) -> list[dict[str, Any]]:
    """``{revision: percent}`` as bars, largest first."""
    if not isinstance(split, dict):
        return []
    items = sorted(split.items(), key=lambda item: (-_number(item[1]), str(item[0])))
    return [{"revision": str(rev), "percent": _number(pct)} for rev, pct in items]


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


def _detail(detail: Any) -> str:
    if not isinstance(detail, dict):
        return "" if detail is None else str(detail)
    return ", ".join(f"{k}={v}" for k, v in detail.items())


def page(d: dict[str, Any]) -> dict[str, Any]:
    """Every value the template shows, as plain strings, numbers and lists (no markup)."""
    command = str(d.get("command") or "check")
    action = str(d.get("action") or "none")
    words = _ROLLOUT_ACTION_WORDS if command == "rollout" else _ACTION_WORDS
    verdict = str(d.get("verdict") or "inconclusive")
    steps = [_dict(s) for s in _list(d.get("steps"))]
    rules = [_rule(_dict(r)) for r in _list(d.get("rules"))]
    return {
        "version": __version__,
        "running": False,
        "command": command,
        "title": _TITLES.get(command, f"deploy-guard {command}"),
        "verdict": verdict,
        "verdict_class": _VERDICT_CLASS.get(verdict, "error"),
        "action": words.get(action, action),
        "exit_code": d.get("exit_code"),
        "revision": str(d.get("revision") or ""),
        "about": _about(d, command),
        "service": str(d.get("service") or ""),
        "project": str(d.get("project") or ""),
        "region": str(d.get("region") or ""),
        "message": str(d.get("message") or ""),
        "reasons": [str(r) for r in _list(d.get("reasons"))],
        "deciding": [str(r) for r in _list(d.get("deciding_rules"))],
        "error": str(d.get("error") or ""),
        "notes": [str(n) for n in _list(d.get("notes"))],
        "dry_run": bool(d.get("dry_run")),
        "cloud_deploy": phase_line(d.get("cloud_deploy")),
        "policies": [str(p) for p in _list(d.get("policies"))],
        "baseline": [str(b) for b in _list(d.get("baseline"))],
        "target_url": str(d.get("target_url") or ""),
        "temporary_tag": str(d.get("temporary_tag") or ""),
        "traffic_before": d.get("traffic_before") or {},
        "traffic_after": d.get("traffic_after") or {},
        "rules": rules,
        "picture": picture(d),
        "steps": _steps(steps, action) if steps else [],
        "stop_line": stop_line(steps, action) if steps else "",
        "watch": _watch(_dict(d.get("watch"))) if command == "watch" else None,
        "timeline": [
            {
                "t": _number(e.get("t")),
                "at": str(e.get("at") or ""),
                "event": str(e.get("event") or ""),
                "detail": _detail(e.get("detail")),
            }
            for e in (_dict(x) for x in _list(d.get("timeline")))
        ],
        "timeline_dropped": int(_number(d.get("timeline_dropped"))),
        "notifications": [
            {k: str(n.get(k) if n.get(k) is not None else "") for k in _NOTIFICATION_FIELDS}
            for n in (_dict(x) for x in _list(d.get("notifications")))
        ],
        "api_calls": {
            str(api): {str(m): n for m, n in _dict(methods).items()}
            for api, methods in _dict(d.get("api_calls")).items()
        },
        "api_calls_total": d.get("api_calls_total", 0),
        "evidence_passes": _dict(d.get("evidence_passes")),
        "started_at": str(d.get("started_at") or ""),
        "finished_at": str(d.get("finished_at") or ""),
        "duration_s": _number(d.get("duration_s")),
    }


def _about(d: dict[str, Any], command: str) -> str:
    """What the verdict is about, as the summary's title says it: the revision judged; for
    a watch, the revisions it rolled back (it failed those), else the one it watched last."""
    if command == "watch":
        rollbacks = _list(_dict(d.get("watch")).get("rollbacks"))
        rolled = [str(_dict(r).get("revision") or "") for r in rollbacks]
        if any(rolled):
            return ", ".join(dict.fromkeys(r for r in rolled if r))
    return str(d.get("revision") or d.get("service") or "")


def _rule(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "rule": str(r.get("rule") or ""),
        "kind": str(r.get("kind") or ""),
        "status": str(r.get("status") or ""),
        "severity": str(r.get("severity") or ""),
        "observed": observed_text(r),
        "threshold": str(r.get("threshold") or ""),
        "counts": str(r.get("counts") or ""),
        "message": str(r.get("message") or ""),
        "evidence": [str(e) for e in _list(r.get("evidence"))],
    }


def _steps(steps: list[dict[str, Any]], action: str) -> list[dict[str, Any]]:
    names = stage_names(steps)
    return [
        {
            "name": name,
            "percent": step.get("percent", 0),
            "status": str(step.get("status") or ""),
            "written": step.get("traffic_written") or {},
            "verified": step.get("traffic_verified") or {},
            "check": traffic_check(step),
            "took": how_long(step),
            "why": why(step),
            "rules": [_rule(_dict(r)) for r in _list(step.get("rules"))],
        }
        for name, step in zip(names, steps, strict=True)
    ]


def _watch(watch: dict[str, Any]) -> dict[str, Any]:
    facts = [
        (label, watch[key])
        for key, label in (
            ("revision", "watched at the end"),
            ("status", "last look"),
            ("watched_s", "watched for (s)"),
            ("windows_judged", "looks at the window"),
            ("canary_sessions", "canary sessions"),
            ("probe_rounds", "probe rounds"),
            ("logs_mode", "logs"),
            ("logs_reads", "ListLogEntries reads"),
            ("tail_opens", "live tails opened"),
            ("metric_reads", "metric reads"),
            ("logs_fallback", "logs fell back to polling"),
        )
        if key in watch
    ]
    return {
        "facts": [(label, str(value)) for label, value in facts],
        "rollbacks": [_dict(r) for r in _list(watch.get("rollbacks"))],
        "degraded": [_dict(e) for e in _list(watch.get("degraded"))],
        "degraded_now": bool(watch.get("degraded_now")),
    }
