"""Fleet files: which policies judge which service, one guard per entry, no coordinator.

A release that spans many services (or one service in many regions) runs one guard
per service: a Cloud Build step each, or a Cloud Run job with one task each. The
guards share nothing at run time: each one's state lives on its own service (the
annotations a check writes), so none of them waits for, or can break, another. What
they share is this file, which says for every service the policies that judge it::

    version: 1
    log_read_quota: 60/min        # Cloud Logging reads a minute per project (see below)
    region: europe-west1          # default for the entries (else --region)
    services:
      - service: chat-agent
        policy: ../../policies/chat-agent.yaml
      - service: hello
        region: us-central1       # the same name in two regions: two entries
        policy: [../../policies/http-minimal.yaml]

Policy paths are relative to the file's folder (as a compose file's are), so the
file means the same from any working directory. A guard finds its own entry by
``--service`` (Cloud Build: one step per service) or by ``CLOUD_RUN_TASK_INDEX`` (a
Cloud Run job: task K checks entry K, and ``CLOUD_RUN_TASK_COUNT`` must equal the
number of entries). ``log_read_quota`` is what the guards of one project share: see
:mod:`deploy_guard.analysis.budget`.

The whole file is validated before anything is touched, every entry's policies
included, and every problem is reported at its place, as the policy loader does:
``deploy/fleet/fleet.yaml:9:13: services[1].policy: no such file or folder: ...``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deploy_guard.analysis.budget import DEFAULT_QUOTA_PER_MIN, LogBudget, parse_rate
from deploy_guard.errors import ConfigError, PolicyError
from deploy_guard.policy.problems import Problem, policy_error, quoted

if TYPE_CHECKING:  # pragma: no cover
    from deploy_guard.policy.load import _Document
    from deploy_guard.policy.model import Policy

TOP_KEYS = ("version", "log_read_quota", "project", "region", "services")
ENTRY_KEYS = ("service", "policy", "project", "region")
#: A fleet file is a few kilobytes; 10,000 tasks is Cloud Run's most for one job.
MAX_FILE_BYTES = 1_000_000
MAX_ENTRIES = 10_000
#: Cloud Run service names: lowercase letters, digits and hyphens, a letter first,
#: no hyphen last, at most 49 characters.
_SERVICE = re.compile(r"^[a-z](?:[a-z0-9-]{0,47}[a-z0-9])?$")
_REGION = re.compile(r"^[a-z][a-z0-9-]*[0-9]$")
_PROJECT = re.compile(r"^[a-z0-9][a-z0-9.:-]*[a-z0-9]$")


@dataclass(frozen=True)
class FleetEntry:
    """One service of the fleet: its policies, and where it runs when the file says."""

    service: str
    #: Policy files or folders, resolved against the fleet file's folder.
    policy_paths: tuple[str, ...]
    project: str | None = None
    region: str | None = None
    #: Where the entry starts in the file (1-based), for messages.
    line: int = 0
    #: Its place in the file's ``services`` list.
    at: int = 0
    #: The policies of ``policy_paths`` that apply to ``service`` (loaded once, here).
    policies: tuple[Policy, ...] = field(default=(), compare=False)

    def where(self, region: str | None) -> str:
        """``chat-agent`` or ``hello (us-central1)``: how messages name it."""
        place = self.region or region
        return f"{self.service} ({place})" if place else self.service


@dataclass(frozen=True)
class Fleet:
    """A validated fleet file."""

    file: str
    entries: tuple[FleetEntry, ...]
    #: Cloud Logging's ``entries.list`` quota of each project, calls a minute.
    log_read_quota: float = DEFAULT_QUOTA_PER_MIN

    def budget(self, index: int, project: str | None, *, min_spacing: float = 0.0) -> LogBudget:
        """Entry ``index``'s share of its project's read quota.

        The quota is per project, so the guards that share it are the entries in the
        same project (``project``: where entries that name none run).
        """
        mine = self.entries[index].project or project
        peers = [i for i, e in enumerate(self.entries) if (e.project or project) == mine]
        return LogBudget(
            quota=self.log_read_quota,
            guards=len(peers),
            index=peers.index(index),
            min_spacing=min_spacing,
        )


def _read(path: Path) -> str:
    file = str(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        problem = Problem(file, 0, 0, "", f"cannot read the fleet file: {reason}")
        raise policy_error([problem]) from None
    if len(raw) > MAX_FILE_BYTES:
        message = f"the file is over {MAX_FILE_BYTES:,} bytes; a fleet file is a few kilobytes"
        raise policy_error([Problem(file, 0, 0, "", message)])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise policy_error([Problem(file, 1, 1, "", "the file is not UTF-8 text")]) from None


def _parse(text: str, file: str) -> tuple[_Document, Any]:
    """YAML -> (positions, plain data), or PolicyError saying where it is broken."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    from deploy_guard.policy.load import _Document, _TooLarge

    doc = _Document(file)
    try:
        tree = YAML(typ="rt").load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        pos = (mark.line, mark.column) if mark is not None else (0, 0)
        what = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        doc.problem(pos, (), f"invalid YAML: {what or exc}")
        raise policy_error(doc.problems) from None
    except (YAMLError, ValueError, RecursionError) as exc:
        doc.problem((0, 0), (), f"invalid YAML: {exc}")
        raise policy_error(doc.problems) from None
    try:
        data = doc.convert(tree, (), (0, 0)) if tree is not None else None
    except (_TooLarge, RecursionError):
        doc.problem((0, 0), (), "the document is too large")
        raise policy_error(doc.problems) from None
    if not isinstance(data, dict):
        doc.problem((0, 0), (), "a fleet file holds one mapping: version: 1, services: [...]")
        raise policy_error(doc.problems)
    return doc, data


class _Checker:
    """Collects every problem of one fleet file, at its place."""

    def __init__(self, doc: _Document, folder: Path) -> None:
        self.doc, self.folder = doc, folder
        self.problems: list[Problem] = []

    def add(self, loc: tuple[str | int, ...], message: str, *, on_key: bool = False) -> None:
        from deploy_guard.policy.problems import format_path

        table = self.doc.key_pos if on_key else self.doc.value_pos
        pos = table.get(loc) or self.doc.value_pos.get(loc) or self.doc.value_pos.get(loc[:-1])
        line, column = pos if pos is not None else (-1, -1)
        self.problems.append(
            Problem(self.doc.file, line + 1, column + 1, format_path(loc), message)
        )

    def keys(
        self, data: Mapping[str, Any], loc: tuple[str | int, ...], allowed: tuple[str, ...]
    ) -> None:
        for key in data:
            if key not in allowed:
                self.add((*loc, key), f"unknown key (allowed: {', '.join(allowed)})", on_key=True)

    def text(
        self, data: Mapping[str, Any], loc: tuple[str | int, ...], key: str, pattern: Any, what: str
    ) -> str | None:
        """``data[key]`` when it is a string of the right form (else a problem, None)."""
        value = data.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not pattern.match(value):
            shown = quoted(value) if isinstance(value, str) else repr(value)
            self.add((*loc, key), f"{shown} is not {what}")
            return None
        return value

    def paths(self, raw: Any, loc: tuple[str | int, ...]) -> tuple[str, ...]:
        """An entry's ``policy``: one path or a list of them, each existing."""
        items = raw if isinstance(raw, list) else [raw]
        if raw is None or not items:
            self.add(loc, "name the policy file or folder that judges this service")
            return ()
        found: list[str] = []
        for n, item in enumerate(items):
            at = (*loc, n) if isinstance(raw, list) else loc
            if not isinstance(item, str) or not item.strip():
                self.add(at, "a policy path is a file or folder name")
                continue
            path = Path(item) if Path(item).is_absolute() else self.folder / item
            if not path.exists():
                self.add(at, f"no such file or folder: {path} (paths are relative to the file)")
                continue
            found.append(str(path))
        return tuple(found)


def _entries(check: _Checker, data: dict[str, Any]) -> list[FleetEntry]:
    raw = data.get("services")
    if not isinstance(raw, list) or not raw:
        check.add(("services",), "list the services: services: [{service: ..., policy: ...}]")
        return []
    if len(raw) > MAX_ENTRIES:
        check.add(("services",), f"{len(raw)} entries: a Cloud Run job runs at most {MAX_ENTRIES}")
        return []
    entries: list[FleetEntry] = []
    for i, item in enumerate(raw):
        loc: tuple[str | int, ...] = ("services", i)
        if not isinstance(item, dict):
            check.add(loc, "an entry is a mapping: {service: NAME, policy: PATH}")
            continue
        check.keys(item, loc, ENTRY_KEYS)
        service = check.text(item, loc, "service", _SERVICE, "a Cloud Run service name")
        if "service" not in item:
            check.add(loc, "missing service: the Cloud Run service this entry checks")
        project = check.text(item, loc, "project", _PROJECT, "a project id")
        region = check.text(item, loc, "region", _REGION, "a region (e.g. europe-west1)")
        paths = check.paths(item.get("policy"), (*loc, "policy"))
        if service is not None:  # kept with bad paths too: a duplicate is still one
            line = check.doc.value_pos.get(loc, (0, 0))[0] + 1
            entries.append(FleetEntry(service, paths, project, region, line, i))
    return entries


def _duplicates(check: _Checker, entries: list[FleetEntry], data: dict[str, Any]) -> None:
    """Two entries on one service (same project and region): two guards would race."""
    seen: dict[tuple[str, Any, Any], FleetEntry] = {}
    project, region = data.get("project"), data.get("region")
    for entry in entries:
        key = (entry.service, entry.project or project, entry.region or region)
        first = seen.setdefault(key, entry)
        if first is not entry:
            check.add(
                ("services", entry.at),
                f"service {entry.where(region)} is listed twice (first at line {first.line}): "
                "two guards on one service race to roll it back; keep one entry",
            )


def _with_policies(check: _Checker, entries: list[FleetEntry]) -> list[FleetEntry]:
    """Each entry with the policies that apply to it; every policy problem reported."""
    from deploy_guard.policy.load import check_paths

    loaded: dict[tuple[str, ...], list[Policy]] = {}
    out: list[FleetEntry] = []
    for entry in entries:
        if not entry.policy_paths:  # its problem is reported already
            continue
        if entry.policy_paths not in loaded:
            _files, policies, problems = check_paths(entry.policy_paths)
            check.problems.extend(problems)
            loaded[entry.policy_paths] = [] if problems else policies
        policies = loaded[entry.policy_paths]
        applying = tuple(p for p in policies if p.applies_to(entry.service))
        if policies and not applying:
            names = "; ".join(f"{p.name}: {', '.join(p.services)}" for p in policies)
            check.add(
                ("services", entry.at, "policy"),
                f"no policy there applies to service {entry.service} (their services: "
                f"{names}); add the name, or a pattern, to a policy's services:",
            )
        out.append(replace(entry, policies=applying))
    return out


def load_fleet(path: str | Path) -> Fleet:
    """Load and validate a fleet file, its policies included. Raises PolicyError with every
    problem (the fleet file's and its policy files')."""
    file = Path(path)
    doc, data = _parse(_read(file), str(path))
    check = _Checker(doc, file.parent)
    check.problems.extend(doc.problems)  # YAML tags, alias loops: refused while converting
    check.keys(data, (), TOP_KEYS)
    if data.get("version") != 1:
        check.add(("version",), "version: 1 is the only fleet file version")
    quota = DEFAULT_QUOTA_PER_MIN
    if data.get("log_read_quota") is not None:
        try:
            quota = parse_rate(str(data["log_read_quota"]))
        except ValueError as exc:
            check.add(("log_read_quota",), f"{exc} (Cloud Logging's entries.list quota)")
    check.text(data, (), "project", _PROJECT, "a project id")
    check.text(data, (), "region", _REGION, "a region (e.g. europe-west1)")
    entries = _entries(check, data)
    _duplicates(check, entries, data)
    entries = _with_policies(check, entries)
    if check.problems:
        raise policy_error(check.problems)
    default_project, default_region = data.get("project"), data.get("region")
    return Fleet(
        str(path),
        tuple(
            replace(e, project=e.project or default_project, region=e.region or default_region)
            for e in entries
        ),
        quota,
    )


def _task_number(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value < 0:
        raise ConfigError(f"{name}={value} is negative")
    return value


def pick(
    fleet: Fleet,
    *,
    service: str | None = None,
    region: str | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """The index of the entry this guard checks.

    ``--service`` (with ``--region`` when the name is in several regions) names it;
    else ``CLOUD_RUN_TASK_INDEX`` (a Cloud Run job's task K checks entry K); else the
    only entry. A job whose ``CLOUD_RUN_TASK_COUNT`` differs from the number of entries
    would leave services unchecked or check one twice: exit 2, before anything.
    """
    import os

    env = os.environ if env is None else env
    entries, file = fleet.entries, fleet.file
    count = _task_number(env, "CLOUD_RUN_TASK_COUNT")
    index = _task_number(env, "CLOUD_RUN_TASK_INDEX")
    listed = f"{len(entries)} service{'s' if len(entries) != 1 else ''}"
    if count is not None and count != len(entries):
        raise ConfigError(
            f"CLOUD_RUN_TASK_COUNT={count} but {file} lists {listed}: the job's taskCount "
            "must equal the number of entries (task K checks entry K), or services go "
            "unchecked or are checked twice"
        )
    if index is not None and index >= len(entries):
        raise ConfigError(
            f"CLOUD_RUN_TASK_INDEX={index} but {file} lists only {listed} (0 to "
            f"{len(entries) - 1}): the job's taskCount must equal the number of entries"
        )
    if service:
        named = [i for i, e in enumerate(entries) if e.service == service]
        if not named:
            raise ConfigError(f"service {service!r} is not in {file} ({listed})")
        if len(named) > 1 and region:
            places = ", ".join(str(entries[i].region) for i in named)
            named = [i for i in named if entries[i].region in (region, None)]
            if not named:
                raise ConfigError(f"service {service!r} is in {file} in {places}, not {region}")
        if len(named) > 1:
            places = ", ".join(str(entries[i].region) for i in named)
            raise ConfigError(
                f"service {service!r} is in {file} more than once ({places}): add --region"
            )
        chosen = entries[named[0]].region
        if region and chosen and chosen != region:
            raise ConfigError(
                f"service {service!r} is in {file} in {chosen}, not {region}: drop --region "
                "(the fleet file says where each service runs) or fix the file"
            )
        if index is not None and index != named[0]:
            raise ConfigError(
                f"--service {service} is entry {named[0]} of {file}, but CLOUD_RUN_TASK_INDEX="
                f"{index} names entry {index} ({entries[index].service}): pass one of them"
            )
        return named[0]
    if index is not None:
        return index
    if len(entries) == 1:
        return 0
    raise ConfigError(
        f"{file} lists {listed}: one guard checks one. Pass --service NAME, or run one "
        "task per entry (a Cloud Run job sets CLOUD_RUN_TASK_INDEX)"
    )


__all__ = ["ENTRY_KEYS", "TOP_KEYS", "Fleet", "FleetEntry", "PolicyError", "load_fleet", "pick"]
