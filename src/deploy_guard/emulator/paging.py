"""List paging the way Google APIs do it: ``page_size`` and opaque page tokens."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import TypeVar

from deploy_guard.errors import EmulatorError

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def _token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def _offset(token: str) -> int:
    try:
        kind, _, value = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        if kind == "offset" and value.isdigit():
            return int(value)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise EmulatorError("INVALID_ARGUMENT", f"page_token {token!r} is invalid")


def page(items: Sequence[T], page_size: int, page_token: str) -> tuple[list[T], str]:
    """One page of ``items`` and the token of the next page ('' on the last)."""
    if page_size < 0:
        raise EmulatorError("INVALID_ARGUMENT", f"page_size {page_size} must not be negative")
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    start = _offset(page_token) if page_token else 0
    chunk = list(items[start : start + size])
    end = start + len(chunk)
    return chunk, (_token(end) if end < len(items) else "")
