"""``--summary FILE.md``: the check in Markdown, for a Cloud Build log or a pull request.

Same facts as the JSON report, laid out for people: the verdict and what was
done first, then a table of rules with their counts, then traffic before and
after, the timeline and the API calls (against Cloud Logging's read quota).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploy_guard.report.cloud_deploy import phase_line
from deploy_guard.report.json import write_atomic
from deploy_guard.report.model import CheckReport, observed_text
from deploy_guard.report.steps import (
    held_at,
    how_long,
    parse_time,
    percent,
    stage_names,
    stop_line,
    stopped_at,
    traffic_check,
)

_ICON = {
    "pass": "✅",
    "warn": "⚠️",
    "fail": "❌",
    "inconclusive": "❔",
    "no_data": "❔",
    "error": "⛔",
    "skipped": "⏭️",
    "pending": "⏳",
    "running": "▶️",
    "interrupted": "⏹️",
}
_ACTION_WORDS = {
    "none": "no traffic change",
    "rolled_back": "traffic rolled back",
    "promoted": "candidate promoted to 100 %",
    "held": "held: nothing changed",
    "superseded": "refused: the service changed during the check",
    "failed": "the traffic change FAILED: act by hand",
    "unverified": "traffic change sent, NOT verified: check what the service serves",
}


#: A rollout's actions in its own words (a rollback restores the split from before it).
_ROLLOUT_ACTION_WORDS = {
    **_ACTION_WORDS,
    "rolled_back": "traffic put back to the split from before the rollout",
    "superseded": "refused: the service changed during the rollout",
}


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _observed(rule: dict[str, Any]) -> str:
    """A rule's observed figure for people, in its unit (the JSON keeps the raw value)."""
    return _cell(observed_text(rule))


def _split(split: dict[str, int]) -> str:
    if not split:
        return "(none)"
    return ", ".join(f"`{rev}` {pct}%" for rev, pct in sorted(split.items(), key=lambda i: -i[1]))


def render_markdown(report: CheckReport) -> str:
    d = report.to_dict()
    if report.command == "rollout":
        return rollout_markdown(d)
    action = _ACTION_WORDS.get(d["action"], d["action"])
    if report.command == "watch":
        lines = _head(d, "deploy-guard watch", action, about=_watch_about(d))
        lines += _watch(d.get("watch", {}))
    else:
        lines = _head(d, "deploy-guard", action)
    lines += _rules(d["rules"])
    lines += _tail(d)
    return "\n".join(lines) + "\n"


def _head(d: dict[str, Any], title: str, action: str, about: str | None = None) -> list[str]:
    """The verdict line and the facts under it (service, exit code, traffic, outcome).

    ``about``: what the verdict is about (default: the report's revision, if any).
    """
    verdict = d["verdict"]
    about = about if about is not None else d["revision"]
    what = f" — `{about}`" if about else ""
    lines = [
        f"## {title}: {_ICON.get(verdict, '')} {verdict.upper()}{what} ({action})",
        "",
        f"- **Service**: `{d['service']}` ({d['project']}, {d['region']})",
        f"- **Exit code**: {d['exit_code']}",
        f"- **Policies**: {', '.join(d['policies']) or '(none)'}",
        f"- **Baseline**: {', '.join(f'`{b}`' for b in d['baseline']) or '(none)'}",
        f"- **Traffic before**: {_split(d['traffic_before'])}",
        f"- **Traffic after**: {_split(d['traffic_after'])}",
    ]
    if line := phase_line(d.get("cloud_deploy")):  # a Cloud Deploy verify job's phase
        lines.insert(3, f"- **Cloud Deploy**: {_cell(line)}")
    if d["dry_run"]:
        lines.append("- **Dry run**: nothing was changed")
    if d["message"]:
        lines.append(f"- **Outcome**: {_cell(d['message'])}")
    if d["error"]:
        lines.append(f"- **Error**: {_cell(d['error'])}")
    lines += [f"- **Note**: {_cell(note)}" for note in d["notes"]]
    return lines


def _watch_about(d: dict[str, Any]) -> str:
    """What a watch's verdict is about: the revisions it rolled back, else the one it
    watched last (a watch that rolled V2 back and went on watching V1 failed V2, not V1),
    else the service (it stopped before it watched anything)."""
    rolled = [str(r.get("revision")) for r in (d.get("watch") or {}).get("rollbacks", [])]
    if rolled:
        return "`, `".join(dict.fromkeys(rolled))
    return str(d["revision"] or d["service"] or "")


def _count(n: Any, word: str, plural: str = "") -> str:
    """``1 stream``, ``2 streams``."""
    return f"{n} {word if n == 1 else plural or word + 's'}"


def _watch(watch: dict[str, Any]) -> list[str]:
    """A watch's own facts: how long, what it read, rollbacks and degraded episodes."""
    lines: list[str] = []
    if "watched_s" in watch:
        last = f"`{_cell(watch['revision'])}` " if watch.get("revision") else ""
        lines.append(
            f"- **Watched**: {last}for {watch['watched_s']:.0f} s "
            f"({_count(watch.get('windows_judged', 0), 'look')} at the window), ending "
            f"{_cell(watch.get('status', ''))}"
        )
    if "logs_mode" in watch:
        lines.append(
            f"- **Logs**: {watch['logs_mode']} ({_count(watch.get('tail_opens', 0), 'stream')} "
            f"opened, {_count(watch.get('logs_reads', 0), 'ListLogEntries read')})"
        )
    if "logs_fallback" in watch:
        lines.append(f"- **Logs fell back to polling**: {_cell(watch['logs_fallback'])}")
    probes = [
        _count(watch[k], word)
        for k, word in (("canary_sessions", "canary session"), ("probe_rounds", "probe round"))
        if k in watch
    ]
    if probes:
        lines.append(f"- **Probes**: {', '.join(probes)}")
    for rollback in watch.get("rollbacks", []):
        took = rollback.get("first_bad_to_verified_s")
        timing = f": {took:.2f} s from the first bad session or log line" if took else ""
        lines.append(
            f"- **Rolled back** `{_cell(rollback.get('revision'))}` at "
            f"{_cell(rollback.get('verified_at'))}{timing}"
        )
    for episode in watch.get("degraded", []):
        lines.append(f"- **Degraded** at {_cell(episode.get('at'))}: {_cell(episode.get('why'))}")
    return ["", "### Watch", "", *lines] if lines else []


def _rules(rules: list[dict[str, Any]], title: str = "Rules") -> list[str]:
    """The rule table (with every message) and the first evidence lines of each rule."""
    lines = ["", f"### {title}", ""]
    if not rules:
        return [*lines, "(no rule was judged)"]
    lines += [
        "| | rule | kind | status | observed | threshold | counts | message |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rules:
        lines.append(
            f"| {_ICON.get(r.get('status', ''), '')} | `{_cell(r.get('rule'))}` "
            f"| {_cell(r.get('kind'))} | {_cell(r.get('status'))} "
            f"| {_observed(r)} | {_cell(r.get('threshold'))} "
            f"| {_cell(r.get('counts'))} | {_cell(r.get('message'))} |"
        )
    return lines + _evidence(rules)


def _evidence(rules: list[dict[str, Any]]) -> list[str]:
    evidence = [(r["rule"], e) for r in rules for e in r.get("evidence", [])[:3]]
    if not evidence:
        return []
    lines = ["", "<details><summary>Evidence</summary>", ""]
    lines += [f"- `{rule}`: {_cell(e)}" for rule, e in evidence]
    return [*lines, "", "</details>"]


def _tail(d: dict[str, Any]) -> list[str]:
    """The timeline and the Cloud API calls (against Cloud Logging's read quota)."""
    lines = [
        "",
        "### Timeline",
        "",
        "| t (s) | time (UTC) | event | detail |",
        "|---|---|---|---|",
    ]
    for ev in d["timeline"]:
        detail = ", ".join(f"{k}={v}" for k, v in ev["detail"].items())
        lines.append(f"| {ev['t']:.3f} | {ev['at']} | {ev['event']} | {_cell(detail)} |")
    lines += ["", f"### Cloud API calls ({d['api_calls_total']})", ""]
    for api, methods in d["api_calls"].items():
        lines.append(f"- {api}: " + ", ".join(f"{m} {n}" for m, n in sorted(methods.items())))
    return lines


def rollout_markdown(d: dict[str, Any]) -> str:
    """A rollout's summary: the verdict, every stage, where it stopped and why, rule results.

    ``d`` is the report's ``to_dict()`` (redacted). The rule table of a check
    becomes one compact list per stage, and the evidence shown is that of the
    stage where the rollout stopped (the one a person has to read).
    """
    steps: list[dict[str, Any]] = d.get("steps") or []
    stop = stop_line(steps, d["action"])
    action = _ROLLOUT_ACTION_WORDS.get(d["action"], d["action"])
    if d["action"] == "held":
        action = held_at(steps)
    lines = _head(d, "deploy-guard rollout", action)
    lines += _steps(steps, parse_time(d["finished_at"]))
    lines += ["", "### Where it stopped", "", *_where(d, steps, stop)]
    if any(s.get("rules") for s in steps):
        lines += _step_rules(steps)
        at = stopped_at(steps)
        lines += _evidence(steps[at]["rules"]) if at is not None else []
    elif d["rules"]:
        lines += _rules(d["rules"])
    lines += _tail(d)
    return "\n".join(lines) + "\n"


def _steps(steps: list[dict[str, Any]], until: Any) -> list[str]:
    """One row per stage: planned share, traffic written and read back, status, time, reasons."""
    lines = ["", "### Steps", ""]
    if not steps:
        return [*lines, "(the rollout stopped before its first stage)"]
    lines += [
        "| | stage | percent | traffic written | traffic verified | status | how long | reasons |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, step in zip(stage_names(steps), steps, strict=True):
        status = str(step.get("status", ""))
        lines.append(
            f"| {_ICON.get(status, '')} | {name} | {percent(step)} "
            f"| {_written(step)} | {_verified(step)} | {_cell(status)} "
            f"| {_cell(how_long(step, until))} | {_cell('; '.join(step.get('reasons') or ()))} |"
        )
    return lines


def _written(step: dict[str, Any]) -> str:
    if step.get("phase") == "tag":
        return "(none: tag URL only)"
    return _split(step["traffic_written"]) if step.get("traffic_written") else ""


def _verified(step: dict[str, Any]) -> str:
    """The split read back, said against the one written (a mismatch is what to look at)."""
    check = traffic_check(step)
    if check == "verified":
        return "✅ as written"
    if check == "not verified":
        return "**not verified**"
    if check == "differs":
        return f"⚠️ {_split(step['traffic_verified'])} (not as written)"
    return ""


def _where(d: dict[str, Any], steps: list[dict[str, Any]], stop: str) -> list[str]:
    """The stage that ended the rollout, what the driver said, and the stage's reasons."""
    at = stopped_at(steps)
    if at is not None:
        step, name = steps[at], stage_names(steps)[at]
        status = str(step.get("status", ""))
        said = f": {_cell(step['stopped'])}" if step.get("stopped") else ""
        head = f"At **{name}** ({percent(step)}), {_ICON.get(status, '')} {status}{said}"
        reasons = [f"- {_cell(r)}" for r in step.get("reasons") or ()]
        return [head, "", *reasons] if reasons else [head]
    if stop:
        return [_cell(stop[0].upper() + stop[1:])]
    if not steps:
        return [_cell(d["error"] or d["message"] or "Before its first stage.")]
    return ["It had not stopped: the report was written while it ran."]


def _step_rules(steps: list[dict[str, Any]]) -> list[str]:
    """Each stage's rule results, one line per rule: status, observed against threshold, counts."""
    lines = ["", "### Rules at each stage"]
    for name, step in zip(stage_names(steps), steps, strict=True):
        if not step.get("rules"):
            continue
        status = str(step.get("status", ""))
        lines += ["", f"**{name}** ({percent(step)}): {_ICON.get(status, '')} {status}", ""]
        for r in step["rules"]:
            rule_status = str(r.get("status", ""))
            observed = _observed(r)
            figure = (
                f"{observed} ({_cell(r.get('threshold'))})"
                if observed
                else _cell(r.get("threshold"))
            )
            message = str(r.get("message") or "")
            said = f": {_cell(message)}" if rule_status != "pass" and message else ""
            lines.append(
                f"- {_ICON.get(rule_status, '')} `{_cell(r.get('rule'))}` {rule_status}, "
                f"{figure}; {_cell(r.get('counts'))}{said}"
            )
    return lines


def write_markdown(report: CheckReport, path: str | Path) -> Path:
    return write_atomic(path, render_markdown(report))
