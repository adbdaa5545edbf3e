"""Kubernetes label selectors, as v1 list calls take them (``labelSelector=``).

``gcloud run revisions list --service S`` sends ``serving.knative.dev/service = S``;
gcloud finds the revision a deploy made by its nonce label
(``client.knative.dev/nonce = abcdefghij``). Supported requirements, joined with
commas: ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``, ``k``
(has the label) and ``!k`` (has not). Anything else is refused, naming it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from deploy_guard.emulator.rest.errors import invalid

Matcher = Callable[[Mapping[str, str]], bool]

_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_VALUE = r"[-A-Za-z0-9_.]*"
_REQUIREMENT = re.compile(
    rf"\s*(?:(?P<not>!)\s*(?P<absent>{_KEY})"
    rf"|(?P<key>{_KEY})\s*(?:(?P<op>==|!=|=)\s*(?P<value>{_VALUE})"
    rf"|\s(?P<set>in|notin)\s*\((?P<values>[^)]*)\))?)\s*(?:,|$)"
)


def _requirement(match: re.Match[str]) -> Matcher:
    if match["absent"]:
        absent = match["absent"]
        return lambda labels: absent not in labels
    key = match["key"]
    if match["op"]:
        value, negate = match["value"], match["op"] == "!="
        return lambda labels: (labels.get(key) == value) != negate
    if match["set"]:
        values = {v.strip() for v in match["values"].split(",")}
        inside = match["set"] == "in"
        return lambda labels: (labels.get(key) in values) == inside
    return lambda labels: key in labels


def parse_selector(text: str) -> Matcher:
    """A predicate on a resource's labels; an empty selector matches everything."""
    matchers: list[Matcher] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        match = _REQUIREMENT.match(text, pos)
        if match is None or match.end() == pos:
            raise invalid(
                f"labelSelector {text!r}: cannot parse at position {pos + 1}; use "
                "k=v, k!=v, k in (a,b), k notin (a,b), k or !k, joined with commas"
            )
        matchers.append(_requirement(match))
        pos = match.end()
    return lambda labels: all(m(labels) for m in matchers)
