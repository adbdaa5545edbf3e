"""Validation messages that say what is allowed, not what pydantic expected.

pydantic's own wording ("Input should be 'fail' or 'warn'") is written for
programmers calling a model; a policy author needs the value they wrote, the
choices, and for a typo the key they probably meant. Messages raised by the
model's own validators are already in that voice and pass through unchanged.
"""

from __future__ import annotations

import difflib
import math
import types
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from deploy_guard.policy.model import KINDS, ExpectStep, Policy, SendStep
from deploy_guard.policy.units import shown as _shown

_MODEL_KEYS_OVERRIDE: dict[type[BaseModel], tuple[str, ...]] = {
    SendStep: ("send",),
    ExpectStep: ("expect", "timeout", "allow_extra"),
}


def _strip(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _candidates(annotation: Any) -> list[Any]:
    """The members of a union (Optional included), each stripped of Annotated."""
    annotation = _strip(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [_strip(a) for a in typing.get_args(annotation) if a is not type(None)]
    return [annotation]


def _pick(annotation: Any, raw: Any) -> Any:
    members = _candidates(annotation)
    models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
    if len(models) > 1 and isinstance(raw, Mapping):
        return SendStep if "send" in raw else ExpectStep
    return models[0] if len(models) == 1 else members[0]


def model_at(loc: tuple[str | int, ...], data: Any) -> type[BaseModel] | None:
    """The model whose keys live at ``loc`` of the document, if any."""
    current: Any = Policy
    raw = data
    for part in loc:
        current = _pick(current, raw)
        if isinstance(current, type) and issubclass(current, BaseModel):
            if not isinstance(part, str):
                return None
            field = current.model_fields.get(part)
            if field is None and current is ExpectStep and part == "expect":
                field = current.model_fields["events"]
            if field is None:
                return None
            current = field.annotation
        else:
            origin = typing.get_origin(current)
            if origin is list and isinstance(part, int):
                current = typing.get_args(current)[0]
            elif origin is dict:
                current = typing.get_args(current)[1]
            else:
                return None
        raw = (
            raw.get(part)
            if isinstance(raw, Mapping)
            else (
                raw[part]
                if isinstance(raw, list) and isinstance(part, int) and part < len(raw)
                else None
            )
        )
    picked = _pick(current, raw)
    return picked if isinstance(picked, type) and issubclass(picked, BaseModel) else None


def allowed_keys(model: type[BaseModel]) -> tuple[str, ...]:
    """The keys a policy file may write for ``model``."""
    return _MODEL_KEYS_OVERRIDE.get(model, tuple(model.model_fields))


def _unknown_key(key: str, loc: tuple[str | int, ...], data: Any) -> str:
    model = model_at(loc[:-1], data)
    if model is None:
        return f"unknown key {_shown(key)}"
    allowed = allowed_keys(model)
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f'did you mean "{close[0]}"? ' if close else ""
    return f"unknown key {_shown(key)} ({hint}allowed: {', '.join(allowed)})"


def _non_finite(value: float | str) -> bool:
    """True for NaN and the infinities, also written as text ("inf", "-Infinity", "nan")."""
    try:
        return not math.isfinite(float(value))
    except ValueError:
        return False


def _choices(expected: str) -> str:
    return expected.replace("'", "")


def describe(error: Mapping[str, Any], loc: tuple[str | int, ...], data: Any) -> str:
    """A policy author's message for one pydantic error at document location ``loc``."""
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    last = loc[-1] if loc else ""
    if kind == "missing":
        return f"{_shown(last)} is required" if isinstance(last, str) else "a value is required"
    if kind == "extra_forbidden" and "at" not in ctx:
        return _unknown_key(str(last), loc, data)
    if kind == "literal_error":
        if last == "kind" and len(loc) == 3 and loc[0] == "rules":
            return f"unknown rule kind {_shown(value)} (use {', '.join(KINDS)})"
        return f"{_shown(value)} is not allowed (use {_choices(str(ctx.get('expected', '')))})"
    if kind == "finite_number" or (
        kind in ("float_parsing", "int_parsing", "int_from_float")
        and isinstance(value, float | str)
        and _non_finite(value)
    ):
        return (
            f"{_shown(value)} is not a finite number; thresholds, factors and limits must be "
            "finite (to set no limit, leave the key out)"
        )
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"{_shown(value)} is not a whole number"
    if kind in ("float_parsing", "float_type"):
        return f"{_shown(value)} is not a number"
    if kind in ("bool_parsing", "bool_type"):
        return f"{_shown(value)} is not true or false"
    if kind == "string_type":
        return f"{_shown(value)} is not text; put it in quotes"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"{_shown(value)} is not a mapping (key: value)"
    if kind == "list_type":
        if last == "expect":  # {event: x, timeout: 2s} is the shape people guess
            return (
                f"{_shown(value)} is not a list: name the expected events in order, e.g. "
                "expect: [agent_started, agent_completed], with timeout: and allow_extra: "
                "beside expect"
            )
        return f"{_shown(value)} is not a list"
    if kind == "string_pattern_mismatch":
        return (
            f"{_shown(value)} is not a valid name: use lowercase letters, digits, - and _, "
            "starting with a letter or digit"
        )
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        bound = {
            "greater_than_equal": ("ge", "at least"),
            "greater_than": ("gt", "more than"),
            "less_than_equal": ("le", "at most"),
            "less_than": ("lt", "less than"),
        }[kind]
        return f"{_shown(value)} is out of range (must be {bound[1]} {ctx.get(bound[0])})"
    if kind == "too_short" and last == "steps":
        return "give at least one step (or leave rollout out and pass rollout --steps)"
    if kind == "too_long" and last == "steps":
        return (
            f"{ctx.get('actual_length')} steps are more than a rollout may have (at most "
            f"{ctx.get('max_length')}): each step is a traffic write and a judged window"
        )
    if kind == "too_short":
        n = ctx.get("min_length", 1)
        return f"needs at least {n} item{'s' if n != 1 else ''}"
    if kind == "too_long":
        return f"is too long (at most {ctx.get('max_length')})"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_too_long":
        return f"is too long (at most {ctx.get('max_length')} characters)"
    return str(error.get("msg", "is not valid"))
