"""A parser and evaluator for a subset of the Cloud Logging query language.

Two users share it. The emulator's ``ListLogEntries`` and ``TailLogEntries``
answer the same filters the guard sends to Cloud Logging. The guard itself
parses every ``logs`` rule's filter fragment when it loads a policy (a typo is
a validation error with its position, before anything is touched) and
evaluates each fragment on the entries of its one combined query, so that each
rule counts only the entries its own fragment selects. The module is pure: no
I/O, no Google imports.

It follows the real language where the guard (and a user's policy) can notice
a difference, and refuses what it does not support with the real API's error
shape instead of guessing: ``INVALID_ARGUMENT: Unparseable filter: syntax error at line 1,
column 12, token ')'`` (positions are 1-based, as in the real message).

Supported subset
----------------
- Boolean operators ``AND``, ``OR``, ``NOT`` (upper case only, as in the real
  language; lower-case ``and`` is a search word). Juxtaposition means ``AND``.
  Precedence follows the real language: ``NOT`` binds tightest, then ``OR``,
  then ``AND``, so ``a OR b c`` is ``(a OR b) AND c``. ``-`` before a term
  negates it (``-severity=INFO``). Parentheses group.
- Comparisons ``FIELD OP VALUE`` with ``=`` ``!=`` ``<`` ``<=`` ``>`` ``>=``,
  ``:`` (has: case-insensitive substring; ``FIELD:*`` tests presence),
  ``=~`` and ``!~`` (regular expression search, Python ``re`` standing in for
  RE2; case-sensitive). String comparisons are case-insensitive, like the real
  language. A value may be a group: ``severity=(ERROR OR CRITICAL)``.
- Values: double-quoted strings with ``\\"``, ``\\\\``, ``\\n``, ``\\t`` escapes (any
  other backslash is kept, so ``"\\d+"`` is a regex digit class), or
  bare words (``ERROR``, ``cloud_run_revision``, ``500``). RFC 3339 timestamps
  must be quoted (they contain ``:``).
- Field paths: any dotted path into the entry's camelCase JSON form
  (``resource.type``, ``resource.labels.revision_name``, ``labels.x``,
  ``jsonPayload.any.nested.key``, ``httpRequest.status``, ``logName``,
  ``insertId``, ``textPayload``, ``protoPayload.methodName``); a quoted segment
  is allowed for keys with odd characters (``labels."k8s-pod/app"``).
  ``severity`` compares by rank (``DEFAULT`` < ``DEBUG`` < ... < ``EMERGENCY``,
  names or numbers); ``timestamp`` and ``receiveTimestamp`` compare as
  instants; two values that both read as numbers compare numerically
  (``httpRequest.status>=500``; a duration's ``s`` is dropped, so
  ``httpRequest.latency>5`` means more than five seconds).
- Global restrictions: a bare word or quoted string on its own matches an
  entry when any string in it contains the text (case-insensitive).
- Functions: ``log_id("run.googleapis.com/stdout")`` and ``SEARCH("text")`` /
  ``SEARCH(field, "text")`` (case-insensitive substring, a simplification of
  the real token search).
- ``--`` starts a comment that runs to the end of the line.
- A filter is at most 20,000 characters, as in the real API.

Not supported (a filter using them is INVALID_ARGUMENT, or, for a function,
"unsupported function"): ``sample()``, ``ip_in_net()``, ``cast()``,
``regexp_extract``-style functions, and ``SEARCH``'s token semantics.

Missing fields: a comparison on a field the entry lacks is false, so
``NOT x=1`` and ``x!=1`` (which is defined as ``NOT x=1``) match it.

How a parsed filter judges an entry (type rules, missing fields, lists) is
:mod:`deploy_guard.logfilter_eval`; this module is the lexer and the parser
that build its predicates, and the names callers import.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Final
from urllib.parse import quote

from deploy_guard.errors import EmulatorError
from deploy_guard.logfilter_eval import (
    SEVERITY_RANK,
    Entry,
    Predicate,
    Want,
    all_of,
    always,
    any_of,
    compare_value,
    global_match,
    leaves,
    parse_time,
    resolve,
    severity_rank,
    text_of,
)

_OPERATORS: Final = ("=~", "!~", "!=", "<=", ">=", "=", "<", ">", ":")
_KEYWORDS: Final = frozenset({"AND", "OR", "NOT"})
_WORD_STOP: Final = frozenset('()"=!<>:,~') | frozenset(" \t\r\n")
MAX_FILTER_LENGTH: Final = 20_000
_ESCAPES: Final = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


class FilterError(EmulatorError):
    """A filter that cannot be parsed, with its 1-based line and column.

    It is an :class:`EmulatorError` with status ``INVALID_ARGUMENT`` so that the
    emulator's gRPC layer answers as Cloud Logging does; the policy loader turns
    it into a validation problem.
    """

    def __init__(self, message: str, line: int = 0, column: int = 0) -> None:
        super().__init__("INVALID_ARGUMENT", message)
        self.line = line
        self.column = column


@dataclass(frozen=True)
class _Token:
    kind: str  # "(" ")" "," "OP" "STR" "WORD" "AND" "OR" "NOT" "-" "EOF"
    text: str
    pos: int  # offset in the filter text
    #: True when whitespace (or the start) comes right before this token.
    spaced: bool


def _tokens(text: str) -> list[_Token]:
    """Split a filter into tokens; unterminated strings are the only lexical error."""
    out: list[_Token] = []
    i, n = 0, len(text)
    spaced = True
    while i < n:
        ch = text[i]
        if ch in " \t\r\n":
            i += 1
            spaced = True
            continue
        if text.startswith("--", i) and spaced:
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        start = i
        if ch in "(),":
            out.append(_Token(ch, ch, start, spaced))
            i += 1
        elif ch == '"':
            i += 1
            buf: list[str] = []
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    nxt = text[i + 1]
                    # Known escapes translate; others keep the backslash, so a
                    # regex like "\d+" reaches the regex engine intact.
                    buf.append(_ESCAPES.get(nxt, "\\" + nxt))
                    i += 2
                else:
                    buf.append(text[i])
                    i += 1
            if i >= n:
                raise _syntax_error(text, start, '"', "unterminated string")
            i += 1
            out.append(_Token("STR", "".join(buf), start, spaced))
        elif (op := next((o for o in _OPERATORS if text.startswith(o, i)), None)) is not None:
            out.append(_Token("OP", op, start, spaced))
            i += len(op)
        elif ch in "!~":
            raise _syntax_error(text, start, ch)
        else:
            while i < n and text[i] not in _WORD_STOP:
                i += 1
            word = text[start:i]
            kind = word if word in _KEYWORDS else "WORD"
            out.append(_Token(kind, word, start, spaced))
        spaced = False
    out.append(_Token("EOF", "", n, True))
    return out


def _line_col(text: str, pos: int) -> tuple[int, int]:
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return line, col


def _syntax_error(text: str, pos: int, token: str, why: str = "") -> FilterError:
    line, col = _line_col(text, pos)
    shown = token if token else "<end of filter>"
    msg = f"Unparseable filter: syntax error at line {line}, column {col}, token '{shown}'"
    if why:
        msg += f" ({why})"
    return FilterError(msg, line, col)


# ---------------------------------------------------------------- parser


@dataclass(frozen=True)
class Filter:
    """A parsed filter: call :meth:`matches` on camelCase entry dicts."""

    text: str
    predicate: Predicate
    #: Bounds on ``timestamp`` from top-level ``AND`` terms, for index scans:
    #: (lower, lower_inclusive, upper, upper_inclusive); None where unbounded.
    time_bounds: tuple[datetime | None, bool, datetime | None, bool]
    #: Every field path the filter compares (``severity``, ``resource.labels.revision_name``):
    #: the guard refuses a rule fragment that touches the scope it sets itself.
    fields: frozenset[str] = frozenset()

    def matches(self, entry: Entry) -> bool:
        return self.predicate(entry)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0
        self.lower: datetime | None = None
        self.lower_inc = True
        self.upper: datetime | None = None
        self.upper_inc = True
        self.fields: set[str] = set()

    # -- token helpers
    def peek(self, ahead: int = 0) -> _Token:
        return self.toks[min(self.i + ahead, len(self.toks) - 1)]

    def take(self) -> _Token:
        tok = self.peek()
        self.i += 1
        return tok

    def error(self, tok: _Token, why: str = "") -> FilterError:
        return _syntax_error(self.text, tok.pos, tok.text, why)

    def expect(self, kind: str) -> _Token:
        tok = self.take()
        if tok.kind != kind:
            raise self.error(tok, f"expected {kind!r}")
        return tok

    def split_minus(self) -> None:
        """A word starting with ``-`` at a term's start is negation + the rest."""
        tok = self.peek()
        if tok.kind == "WORD" and tok.text.startswith("-"):
            rest = tok.text[1:]
            parts = [_Token("-", "-", tok.pos, tok.spaced)]
            if rest:
                kind = rest if rest in _KEYWORDS else "WORD"
                parts.append(_Token(kind, rest, tok.pos + 1, False))
            self.toks[self.i : self.i + 1] = parts

    # -- grammar
    def parse(self) -> Filter:
        if self.peek().kind == "EOF":
            return Filter(self.text, always, (None, True, None, True), frozenset())
        terms = self.and_terms(top=True)
        tok = self.peek()
        if tok.kind != "EOF":
            raise self.error(tok)
        pred = terms[0] if len(terms) == 1 else all_of(terms)
        bounds = (self.lower, self.lower_inc, self.upper, self.upper_inc)
        return Filter(self.text, pred, bounds, frozenset(self.fields))

    def and_terms(self, top: bool = False) -> list[Predicate]:
        terms = [self.or_expr(top)]
        while True:
            tok = self.peek()
            if tok.kind == "AND":
                self.take()
                terms.append(self.or_expr(top))
            elif tok.kind in ("EOF", ")"):
                return terms
            else:  # juxtaposition
                terms.append(self.or_expr(top))

    def or_expr(self, top: bool) -> Predicate:
        first_index = self.i
        terms = [self.unary()]
        while self.peek().kind == "OR":
            self.take()
            terms.append(self.unary())
        if top and len(terms) == 1:
            self.note_time_bound(first_index)
        return terms[0] if len(terms) == 1 else any_of(terms)

    def unary(self) -> Predicate:
        self.split_minus()
        tok = self.peek()
        if tok.kind in ("NOT", "-"):
            self.take()
            inner = self.unary()
            return lambda e: not inner(e)
        return self.primary()

    def primary(self) -> Predicate:
        tok = self.take()
        if tok.kind == "(":
            terms = self.and_terms()
            self.expect(")")
            return terms[0] if len(terms) == 1 else all_of(terms)
        if tok.kind == "WORD" and self.peek().kind == "(" and not self.peek().spaced:
            return self.function(tok)
        if tok.kind in ("WORD", "STR"):
            path = self.path(tok)
            nxt = self.peek()
            if nxt.kind == "OP":
                self.take()
                return self.comparison(path, nxt)
            return global_match(tok.text if len(path) == 1 else ".".join(path))
        raise self.error(tok)

    def path(self, first: _Token) -> tuple[str, ...]:
        """A field path; ``a."b-c".d`` joins a quoted segment into the path."""
        parts = first.text.split(".") if first.kind == "WORD" else [first.text]
        while parts and parts[-1] == "" and first.kind == "WORD":
            nxt = self.peek()
            if nxt.kind != "STR" or nxt.spaced:
                break
            self.take()
            parts[-1] = nxt.text
            after = self.peek()
            if after.kind == "WORD" and not after.spaced and after.text.startswith("."):
                self.take()
                parts.extend(after.text[1:].split("."))
        if first.kind == "WORD" and any(p == "" for p in parts):
            raise self.error(first, "empty field name segment")
        return tuple(parts)

    def comparison(self, path: tuple[str, ...], op_tok: _Token) -> Predicate:
        self.fields.add(".".join(path))
        return self.value_expr(op_tok.text, path)

    def value_expr(self, op: str, path: tuple[str, ...]) -> Predicate:
        """A value, or a parenthesised group of values joined by AND/OR/NOT."""
        tok = self.peek()
        if tok.kind == "(":
            self.take()
            pred = self.value_and(op, path)
            self.expect(")")
            return pred
        if tok.kind == "NOT":
            self.take()
            inner = self.value_expr(op, path)
            return lambda e: not inner(e)
        if tok.kind not in ("WORD", "STR"):
            raise self.error(tok, "expected a value")
        self.take()
        return _field_test(path, op, tok.text, self, tok)

    def value_and(self, op: str, path: tuple[str, ...]) -> Predicate:
        terms = [self.value_or(op, path)]
        while self.peek().kind not in (")", "EOF"):
            if self.peek().kind == "AND":
                self.take()
            terms.append(self.value_or(op, path))
        return terms[0] if len(terms) == 1 else all_of(terms)

    def value_or(self, op: str, path: tuple[str, ...]) -> Predicate:
        terms = [self.value_expr(op, path)]
        while self.peek().kind == "OR":
            self.take()
            terms.append(self.value_expr(op, path))
        return terms[0] if len(terms) == 1 else any_of(terms)

    def function(self, name_tok: _Token) -> Predicate:
        self.expect("(")
        args: list[_Token] = []
        while self.peek().kind != ")":
            if args:
                self.expect(",")
            arg = self.take()
            if arg.kind not in ("WORD", "STR"):
                raise self.error(arg, "expected a function argument")
            args.append(arg)
        self.expect(")")
        name = name_tok.text
        if name == "log_id" and len(args) == 1:
            suffix = "/logs/" + quote(args[0].text, safe="")
            return lambda e: str(e.get("logName", "")).endswith(suffix)
        if name == "SEARCH" and len(args) in (1, 2):
            needle = args[-1].text.lower()
            if len(args) == 1:
                return global_match(needle)
            path = tuple(args[0].text.split("."))
            return lambda e: any(
                needle in text_of(leaf).lower() for v in resolve(e, path) for leaf in leaves(v)
            )
        raise self.error(name_tok, f"unsupported function {name}/{len(args)}")

    def note_time_bound(self, index: int) -> None:
        """Remember ``timestamp >= "..."`` style top-level terms for index scans."""
        toks = self.toks[index : self.i]
        if len(toks) != 3 or toks[0].kind != "WORD" or toks[0].text != "timestamp":
            return
        if toks[1].kind != "OP" or toks[2].kind not in ("STR", "WORD"):
            return
        when = parse_time(toks[2].text)
        if when is None:
            return
        op = toks[1].text
        if op in (">", ">=") and (self.lower is None or when > self.lower):
            self.lower, self.lower_inc = when, op == ">="
        elif op in ("<", "<=") and (self.upper is None or when < self.upper):
            self.upper, self.upper_inc = when, op == "<="


def _field_test(
    path: tuple[str, ...], op: str, want: str, parser: _Parser, tok: _Token
) -> Predicate:
    """The predicate for ``path OP want``; regexes compile now, so errors have positions."""
    field = ".".join(path)
    if op == ":" and want == "*" and tok.kind == "WORD":
        return lambda e: bool(resolve(e, path))
    if op in ("=~", "!~"):
        try:
            rx = re.compile(want)
        except re.error as exc:
            raise parser.error(tok, f"invalid regular expression: {exc}") from exc
        positive = op == "=~"

        def regex(e: Entry) -> bool:
            hit = any(
                rx.search(text_of(leaf)) is not None for v in resolve(e, path) for leaf in leaves(v)
            )
            return hit if positive else not hit

        return regex
    target = Want.of(field, want)
    test_op = "=" if op == "!=" else op

    def compare(e: Entry) -> bool:
        values = resolve(e, path)
        if len(values) == 1:  # the common case, without a generator
            hit = compare_value(values[0], test_op, target)
        else:
            hit = any(compare_value(v, test_op, target) for v in values)
        return not hit if op == "!=" else hit

    return compare


def parse(text: str) -> Filter:
    """Parse a filter, or raise :class:`FilterError` with the real API's wording."""
    if len(text) > MAX_FILTER_LENGTH:
        raise FilterError(f"Filter is longer than {MAX_FILTER_LENGTH} characters")
    try:
        return _Parser(text).parse()
    except RecursionError as exc:  # absurd nesting: still the caller's input error
        raise FilterError("Unparseable filter: expression nested too deeply") from exc


def log_name(project: str, log_id: str) -> str:
    """``projects/P/logs/ID`` with the ID URL-encoded, as Cloud Logging spells it."""
    return f"projects/{project}/logs/{quote(log_id, safe='')}"


__all__ = [
    "MAX_FILTER_LENGTH",
    "SEVERITY_RANK",
    "Entry",
    "Filter",
    "FilterError",
    "Predicate",
    "log_name",
    "parse",
    "parse_time",
    "severity_rank",
]
