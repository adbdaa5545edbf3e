"""The Cloud Deploy phase a verify job judged, in words: one line every renderer shows.

``check --cloud-deploy`` puts the phase in the report's ``cloud_deploy`` block
(:class:`~deploy_guard.runtime.cloud_deploy_env.CloudDeployPhase`'s fields).
The Markdown summary, the terminal view, the HTML page and the chat messages
all say it with :func:`phase_line`, from the report's document alone (a saved
report renders the same), so they cannot word it differently.
"""

from __future__ import annotations

from typing import Any

_PROBES = {
    "tag": "probed through the candidate's tag URL",
    "service_url": "probed through the service URL, shared with the stable revision",
}


def phase_line(block: Any) -> str:
    """``phase canary-10 at 10 % · rollout r-1 · release r · pipeline p → target t · ...``.

    "" when there is no block (a report of any other run).
    """
    if not isinstance(block, dict) or not block:
        return ""
    percentage = block.get("percentage")
    share = f" at {percentage} %" if isinstance(percentage, int) else ""
    serving = block.get("serving")
    if isinstance(serving, int) and serving != percentage:
        share += f" (served {serving} %)"
    parts = [
        f"phase {block.get('phase') or '?'}{share}",
        f"rollout {block.get('rollout') or '?'}",
        f"release {block.get('release') or '?'}",
        f"pipeline {block.get('pipeline') or '?'} \u2192 target {block.get('target') or '?'}",
    ]
    if block.get("job_run"):
        parts.append(f"job run {block['job_run']}")
    if block.get("probes") in _PROBES:
        parts.append(_PROBES[str(block["probes"])])
    return " \u00b7 ".join(parts)
