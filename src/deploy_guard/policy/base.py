"""What every policy model shares: the base model, its errors and common field types.

Every model forbids unknown keys: a typo (``sucess_ratio``) is an error at load
time, never a silently ignored setting. Validators raise
:class:`~pydantic_core.PydanticCustomError` (made by :func:`_err`) with messages
that say what is allowed; a ``ctx={"at": "send.text"}`` refines where in the
document the problem sits, which :mod:`deploy_guard.policy.load` turns into
line and column. The models themselves live in the modules named for the rule
kind they describe; :mod:`deploy_guard.policy.model` gathers them.
"""

from __future__ import annotations

import math
import re
import warnings
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from deploy_guard.policy.units import Duration, format_duration, shown

#: An environment variable name (``token_env``, ``${NAME}`` in a header value).
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: An HTTP header name or WebSocket subprotocol (RFC 9110 ``token``).
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


# pydantic warns that a field named "json" shadows BaseModel.json (a deprecated
# v1 method); the name is part of the policy language, so the warning is noise.
warnings.filterwarnings(
    "ignore", message=r'Field name "json" in ".*" shadows', category=UserWarning
)


def _text_problem(text: str, multiline: bool) -> str | None:
    """Why ``text`` cannot work in a policy, or None.

    A lone surrogate (``"\\ud83d"``, half of an escaped emoji) is not a
    character: it cannot be encoded as UTF-8, so a request, a log filter or a
    report that carried it would fail, silently far from its cause. Control
    characters (NUL, BEL, ESC, ...) corrupt headers, URLs, filters and
    terminals; only free text may hold tabs and line breaks.
    """
    for char in text:
        code = ord(char)
        if 0xD800 <= code <= 0xDFFF:
            return (
                f"{shown(text)} holds a lone surrogate (\\u{code:04x}), which is not a character: "
                "write the character itself or its full escape (\\U0001F600, not \\ud83d\\ude00)"
            )
        if char in "\t\n\r":
            if not multiline:
                return f"{shown(text)} holds a tab or line break, which cannot work here: remove it"
        elif code < 0x20 or 0x7F <= code <= 0x9F:
            return (
                f"{shown(text)} holds the control character U+{code:04X}, which cannot work "
                "here: remove it"
            )
    return None


def _text_problems(value: Any, at: tuple[str | int, ...], multiline: bool) -> None:
    """Walk free-form data (``json:`` bodies, maps, lists); raise at the first unusable value."""
    if isinstance(value, str):
        problem = _text_problem(value, multiline)
        if problem:
            raise _err("text", problem, at)
    elif isinstance(value, float) and not math.isfinite(value):
        raise _err("not_finite", f"{value} is not a finite number", at)
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and (problem := _text_problem(key, False)):
                raise _err("text", f"key {problem}", (*at, key))
            _text_problems(item, (*at, str(key)), multiline)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _text_problems(item, (*at, index), multiline)


class _Model(BaseModel):
    """Frozen, closed to unknown keys; ``expect``-style aliases also accept field names.

    Two checks hold for every field of every model, so no field can forget
    them: numbers are finite (``.nan`` and ``.inf`` are refused: a threshold of
    ``.inf`` passes anything, a NaN compares false with everything), and text
    holds only characters that can work (see :func:`_text_problem`); fields
    named in ``_MULTILINE`` are free text and may also hold tabs and line breaks.
    """

    model_config = ConfigDict(
        frozen=True, extra="forbid", validate_by_name=True, allow_inf_nan=False
    )

    #: Fields that hold free text (messages, bodies, descriptions), not names or URLs.
    _MULTILINE: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="after")
    def _usable_values(self) -> Any:
        for name in type(self).model_fields:
            value = getattr(self, name)
            if not isinstance(value, BaseModel):
                _text_problems(value, (name,), name in self._MULTILINE)
        return self


def _err(
    kind: str, message: str, at: str | tuple[str | int, ...] | None = None
) -> PydanticCustomError:
    """A validation error whose message is shown as is; ``at`` narrows its position.

    ``at`` is a dotted path (``"send.text"``, ``"rules[2].name"``) or, when a
    part is a user-written key that may itself hold dots, a tuple of parts.
    """
    return PydanticCustomError(kind, message, {"at": at} if at else None)


def _positive(value: float) -> float:
    if value <= 0:
        raise _err("positive", f"{format_duration(value)} cannot work: give a duration above 0")
    return value


#: A duration that must be more than zero (a timeout, an interval, a window).
PositiveDuration = Annotated[Duration, AfterValidator(_positive)]
#: Text that must not be empty (an empty value cannot mean anything).
NonEmpty = Annotated[str, Field(min_length=1)]
