"""``--summary FILE.md``: the check in Markdown, for a Cloud Build log or a pull request.

Same facts as the JSON report, laid out for people: the verdict and what was
done first, then a table of rules with their counts, then traffic before and
after, the timeline and the API calls (against Cloud Logging's read quota).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploy_guard.report.json import write_atomic
from deploy_guard.report.model import CheckReport, observed_text

_ICON = {
    "pass": "✅",
    "warn": "⚠️",
    "fail": "❌",
    "inconclusive": "❔",
    "no_data": "❔",
    "error": "⛔",
    "pending": "⏳",
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
    verdict = d["verdict"]
    lines = [
        f"## deploy-guard: {_ICON.get(verdict, '')} {verdict.upper()} — "
        f"`{d['revision']}` ({_ACTION_WORDS.get(d['action'], d['action'])})",
        "",
        f"- **Service**: `{d['service']}` ({d['project']}, {d['region']})",
        f"- **Exit code**: {d['exit_code']}",
        f"- **Policies**: {', '.join(d['policies']) or '(none)'}",
        f"- **Baseline**: {', '.join(f'`{b}`' for b in d['baseline']) or '(none)'}",
        f"- **Traffic before**: {_split(d['traffic_before'])}",
        f"- **Traffic after**: {_split(d['traffic_after'])}",
    ]
    if d["dry_run"]:
        lines.append("- **Dry run**: nothing was changed")
    if d["message"]:
        lines.append(f"- **Outcome**: {_cell(d['message'])}")
    if d["error"]:
        lines.append(f"- **Error**: {_cell(d['error'])}")
    lines += [f"- **Note**: {_cell(note)}" for note in d["notes"]]
    lines += ["", "### Rules", ""]
    if d["rules"]:
        lines += [
            "| | rule | kind | status | observed | threshold | counts | message |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in d["rules"]:
            lines.append(
                f"| {_ICON.get(r.get('status', ''), '')} | `{_cell(r.get('rule'))}` "
                f"| {_cell(r.get('kind'))} | {_cell(r.get('status'))} "
                f"| {_observed(r)} | {_cell(r.get('threshold'))} "
                f"| {_cell(r.get('counts'))} | {_cell(r.get('message'))} |"
            )
        evidence = [(r["rule"], e) for r in d["rules"] for e in r.get("evidence", [])[:3]]
        if evidence:
            lines += ["", "<details><summary>Evidence</summary>", ""]
            lines += [f"- `{rule}`: {_cell(e)}" for rule, e in evidence]
            lines += ["", "</details>"]
    else:
        lines.append("(no rule was judged)")
    lines += [
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
    return "\n".join(lines) + "\n"


def write_markdown(report: CheckReport, path: str | Path) -> Path:
    return write_atomic(path, render_markdown(report))
