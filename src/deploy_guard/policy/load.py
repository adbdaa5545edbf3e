"""Loading policy files, with every problem reported at its line and column.

ruamel.yaml's round-trip loader keeps the position of every key and value and
never constructs Python objects from tags, so a policy file cannot execute
code. The document is turned into plain data plus a position table, pydantic
validates the data (collecting *all* errors, not the first), and each error's
location is mapped back to ``file:line:col: path: message``.

Nothing here raises anything but :class:`~deploy_guard.errors.PolicyError`:
unreadable files, invalid YAML and invalid content all become problems.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from deploy_guard.errors import PolicyError
from deploy_guard.policy.messages import describe
from deploy_guard.policy.model import STEP_TAGS, Policy
from deploy_guard.policy.problems import Problem, format_path, policy_error
from deploy_guard.policy.units import shown as _shown

#: Policy files in a folder are the ones with these suffixes.
SUFFIXES = (".yaml", ".yml")
#: Enough for any real policy; stops alias bombs (``&a [*a, *a, ...]``) early.
MAX_NODES = 100_000
#: A policy is a few kilobytes: a larger file is not one, and is never read whole.
MAX_FILE_BYTES = 1_000_000

Loc = tuple[str | int, ...]
Pos = tuple[int, int]


class _Document:
    """Plain data converted from the YAML tree, plus where each part was written."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.key_pos: dict[Loc, Pos] = {}
        self.value_pos: dict[Loc, Pos] = {}
        self.problems: list[Problem] = []
        #: Locations whose YAML was refused (tags, alias loops): no further messages there.
        self.unusable: list[Loc] = []
        self._nodes = 0

    def problem(self, pos: Pos, loc: Loc, message: str) -> None:
        self.problems.append(Problem(self.file, pos[0] + 1, pos[1] + 1, format_path(loc), message))

    def convert(self, node: Any, loc: Loc, pos: Pos, active: frozenset[int] = frozenset()) -> Any:
        """ruamel's round-trip types -> dict/list/str/int/float/bool/None, positions recorded."""
        from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar

        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _TooLarge
        self.value_pos[loc] = pos
        tag = getattr(getattr(node, "tag", None), "value", None)
        if isinstance(node, TaggedScalar) or (
            isinstance(node, CommentedMap | CommentedSeq) and tag is not None
        ):
            self.problem(pos, loc, f"YAML tags ({tag}) are not allowed in policy files")
            self.unusable.append(loc)
            return None
        if isinstance(node, CommentedMap | CommentedSeq):
            if id(node) in active:
                self.problem(pos, loc, "a YAML alias refers to itself")
                self.unusable.append(loc)
                return None
            active = active | {id(node)}
        if isinstance(node, CommentedMap):
            out: dict[Any, Any] = {}
            for key, value in node.items():
                key_pos = _lc(node.lc.key, key, pos)
                if not isinstance(key, str | int | float | bool) or key is None:
                    self.problem(key_pos, loc, "keys must be plain names")
                    continue
                sub = (*loc, str(key)) if not isinstance(key, str) else (*loc, key)
                self.key_pos[sub] = key_pos
                out[key] = self.convert(value, sub, _lc(node.lc.value, key, key_pos), active)
            return out
        if isinstance(node, CommentedSeq):
            return [
                self.convert(item, (*loc, i), _lc(node.lc.item, i, pos), active)
                for i, item in enumerate(node)
            ]
        return _scalar(node)


class _TooLarge(Exception):
    """The document expands to more than :data:`MAX_NODES` nodes."""


def _lc(getter: Any, key: Any, default: Pos) -> Pos:
    try:
        line, col = getter(key)
        return (int(line), int(col))
    except Exception:  # ruamel has no position for some merged keys
        return default


def _scalar(node: Any) -> Any:
    """Drop ruamel's formatting-preserving subclasses (ScalarFloat, HexInt, ...)."""
    if node is None or isinstance(node, bool):
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    if isinstance(node, datetime.date | datetime.datetime):
        return node.isoformat()
    return str(node)


def _parse(text: str, file: str) -> _Document | tuple[_Document, Any]:
    """YAML text -> (document, data); a document alone when the YAML itself is broken."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError
    from ruamel.yaml.reader import ReaderError

    doc = _Document(file)
    yaml = YAML(typ="rt")
    try:
        tree = yaml.load(text)
    except ReaderError as exc:
        if not _unprintable(doc, text):
            doc.problem((0, 0), (), f"invalid YAML: {exc.reason}")
        return doc
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        pos = (mark.line, mark.column) if mark is not None else (0, 0)
        what = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        if "found another document" in what:  # "---": the fix is not obvious from YAML's words
            what += " (a file holds one policy: move the next one to a file of its own)"
        elif "'\\t'" in what:  # YAML's words name the character, not the fix
            what += " (YAML indents with spaces, never tabs: replace the tab with spaces)"
        doc.problem(pos, (), f"invalid YAML: {what or exc}")
        return doc
    except (YAMLError, ValueError, RecursionError) as exc:
        doc.problem((0, 0), (), f"invalid YAML: {exc}")
        return doc
    if tree is None:
        doc.problem((0, 0), (), "the file is empty; a policy needs at least name, services, rules")
        return doc
    try:
        data = doc.convert(tree, (), (0, 0))
    except (_TooLarge, RecursionError):
        doc.problem((0, 0), (), f"the document is too large (more than {MAX_NODES} nodes)")
        return doc
    if not isinstance(data, dict):
        doc.problem((0, 0), (), "a policy file holds one mapping (name: ..., rules: [...])")
        return doc
    return doc, data


#: Characters YAML refuses in a document (the complement of its printable set).
_UNPRINTABLE = re.compile(
    "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)
#: Enough positions to find and fix them; a binary file would have thousands.
MAX_UNPRINTABLE = 10
_CONTROL_NAMES = dict(
    enumerate(
        [
            "NUL",
            "SOH",
            "STX",
            "ETX",
            "EOT",
            "ENQ",
            "ACK",
            "BEL",
            "BS",
            "HT",
            "LF",
            "VT",
            "FF",
            "CR",
            "SO",
            "SI",
            "DLE",
            "DC1",
            "DC2",
            "DC3",
            "DC4",
            "NAK",
            "SYN",
            "ETB",
            "CAN",
            "EM",
            "SUB",
            "ESC",
            "FS",
            "GS",
            "RS",
            "US",
        ]
    )
)


def _unprintable(doc: _Document, text: str) -> bool:
    """One problem per character YAML refuses (NUL, BEL, ESC, ...), each at its own place.

    ruamel reports only the first, at an offset, in a message of several lines.
    The path is found by parsing a copy with the characters replaced; when the
    character is not inside a text value (a comment, say), there is none.
    Returns False when there is no such character (nothing was reported).
    """
    found = list(_UNPRINTABLE.finditer(text))
    if not found:  # ruamel refused something else: the caller reports its words
        return False
    clean = _UNPRINTABLE.sub("\ufffd", text)
    spots: list[tuple[Pos, Loc]] = []
    for match in found[: MAX_UNPRINTABLE + 1]:  # the one after the last reported: "N more"
        before = text[: match.start()]
        line = before.count("\n")
        spots.append(((line, match.start() - (before.rfind("\n") + 1)), ()))
    located = _parse(clean, doc.file)
    if not isinstance(located, _Document):
        found_doc, data = located
        starts = sorted(
            [(pos, loc, False) for loc, pos in found_doc.value_pos.items() if loc]
            + [(pos, loc, True) for loc, pos in found_doc.key_pos.items()]
        )
        for index, (pos, _) in enumerate(spots):
            here = [(loc, key) for start, loc, key in starts if start <= pos]
            if not here:
                continue
            loc, key = here[-1]
            if "\ufffd" in str(loc[-1] if key else _value_at(data, loc)):
                spots[index] = (pos, loc[:-1] if key else loc)
    for (pos, loc), match in zip(spots[:MAX_UNPRINTABLE], found, strict=False):
        code = ord(match.group())
        name = _CONTROL_NAMES.get(code, "DEL" if code == 0x7F else "")
        what = f"U+{code:04X}" + (f" ({name})" if name else "")
        doc.problem(
            pos,
            loc,
            f"control character {what} is not allowed in a policy file (YAML refuses it): "
            "remove it",
        )
    if len(found) > MAX_UNPRINTABLE:
        doc.problem(
            spots[MAX_UNPRINTABLE][0],
            (),
            f"{len(found) - MAX_UNPRINTABLE} more control characters from here; is this a text "
            "file?",
        )
    return True


def _value_at(data: Any, loc: Loc) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _duplicate_names(doc: _Document, data: dict[str, Any]) -> None:
    """Checked on raw data too, so it is reported even when other rule errors exist."""
    rules = data.get("rules")
    if not isinstance(rules, list):
        return
    seen: set[str] = set()
    for index, rule in enumerate(rules):
        name = rule.get("name") if isinstance(rule, dict) else None
        if not isinstance(name, str):
            continue
        if name in seen:
            loc: Loc = ("rules", index, "name")
            doc.problem(
                doc.value_pos.get(loc, (0, 0)),
                loc,
                f"rule name {_shown(name)} is used twice; names must be unique",
            )
        seen.add(name)


def _position(doc: _Document, loc: Loc, on_key: bool) -> Pos:
    """The key's or value's position; for a path not in the file, its nearest parent's."""
    if on_key and loc in doc.key_pos:
        return doc.key_pos[loc]
    for end in range(len(loc), -1, -1):
        if loc[:end] in doc.value_pos:
            return doc.value_pos[loc[:end]]
    return (0, 0)


def parse_at(at: str) -> Loc:
    """``"rules[2].name"`` / ``"send.text"`` / ``"[0]"`` -> location parts."""
    parts: list[str | int] = []
    for piece in at.replace("[", ".[").split("."):
        if not piece:
            continue
        if piece.startswith("[") and piece.endswith("]") and piece[1:-1].isdigit():
            parts.append(int(piece[1:-1]))
        else:
            parts.append(piece)
    return tuple(parts)


def _validation_problems(doc: _Document, data: dict[str, Any], exc: ValidationError) -> None:
    for error in exc.errors(include_url=False):
        loc: Loc = tuple(p for p in error["loc"] if p not in STEP_TAGS)
        ctx = error.get("ctx") or {}
        at = ctx.get("at")
        if isinstance(at, str):
            loc = (*loc, *parse_at(at))
        elif isinstance(at, tuple | list):
            loc = (*loc, *at)
        if any(loc[: len(bad)] == bad for bad in doc.unusable):
            continue  # already reported: a YAML tag or alias loop there
        message = describe(error, loc, data)
        on_key = error["type"] in ("extra_forbidden", "block", "json_path")
        doc.problem(_position(doc, loc, on_key), loc, message)


def parse_policy(text: str, file: str = "<policy>") -> Policy:
    """Validate policy YAML ``text``; ``file`` names it in problems. Raises PolicyError."""
    parsed = _parse(text, file)
    if isinstance(parsed, _Document):
        raise policy_error(parsed.problems)
    doc, data = parsed
    _duplicate_names(doc, data)
    try:
        policy = Policy.model_validate(data, context={"strict_units": True})
    except ValidationError as exc:
        _validation_problems(doc, data, exc)
    if doc.problems:
        raise policy_error(doc.problems)
    policy._source = file
    line, column = doc.value_pos.get(("name",), (0, 0))
    policy._name_at = (line + 1, column + 1)
    policy._positions = {loc: (pos[0] + 1, pos[1] + 1) for loc, pos in doc.value_pos.items()}
    return policy


def load_file(path: str | Path) -> Policy:
    """Load and validate one policy file. Raises PolicyError, with every problem."""
    file = str(path)
    try:
        # Bounded: /dev/zero ends here too. A FIFO is read (process substitution,
        # <(generate-policy), is one); it blocks until its writer writes, as `cat` would.
        with Path(path).open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
        if len(raw) > MAX_FILE_BYTES:
            message = f"the file is over {MAX_FILE_BYTES:,} bytes; a policy is a few kilobytes"
            raise policy_error([Problem(file, 0, 0, "", message)])
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise policy_error([Problem(file, 1, 1, "", "the file is not UTF-8 text")]) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise policy_error([Problem(file, 0, 0, "", f"cannot read the file: {reason}")]) from None
    return parse_policy(text, file)


def policy_files(paths: Sequence[str | Path]) -> list[Path]:
    """Expand folders to their ``*.yaml``/``*.yml`` files (sorted, not recursive into dot dirs)."""
    files: list[Path] = []
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            files.extend(
                sorted(
                    p
                    for p in path.rglob("*")
                    if p.suffix in SUFFIXES
                    and p.is_file()
                    and not any(part.startswith(".") for part in p.relative_to(path).parts)
                )
            )
        else:
            files.append(path)
    return files


def check_paths(paths: Sequence[str | Path]) -> tuple[list[Path], list[Policy], list[Problem]]:
    """Check every policy file under ``paths``; never raises for bad input.

    Returns the files looked at, the policies that loaded and every problem
    (policy names must also be unique across the files).
    """
    policies: list[Policy] = []
    problems: list[Problem] = []
    files = policy_files(paths)
    for path in paths:
        if not Path(path).exists():
            problems.append(Problem(str(path), 0, 0, "", "no such file or folder"))
    for file in files:
        if not file.exists():
            continue
        try:
            policies.append(load_file(file))
        except PolicyError as exc:
            problems.extend(exc.problems)
    if not files and not problems:
        shown = ", ".join(str(p) for p in paths)
        problems.append(Problem(shown or ".", 0, 0, "", "no policy files (*.yaml, *.yml) found"))
    owners: dict[str, str] = {}
    for policy in policies:
        source = policy.source or ""
        if policy.name in owners:
            message = f"policy name {_shown(policy.name)} is also used by {owners[policy.name]}"
            problems.append(Problem(source, *policy.name_at, "name", message))
        owners.setdefault(policy.name, source)
    return files, policies, sorted(set(problems))


def load_paths(paths: Sequence[str | Path]) -> list[Policy]:
    """Load every policy under ``paths`` (files or folders).

    All files are checked before anything is raised, so one PolicyError lists
    every problem in every file.
    """
    _files, policies, problems = check_paths(paths)
    if problems:
        raise policy_error(problems)
    return policies
