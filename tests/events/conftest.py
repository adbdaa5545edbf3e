"""Fixtures for the notifiers: Google's Pub/Sub emulator, started once per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pubsub_emulator import missing, running_pubsub


@pytest.fixture(scope="session")
def pubsub_host() -> Iterator[str]:
    """``PUBSUB_EMULATOR_HOST`` of a running emulator (skips, saying why, where it cannot run)."""
    why = missing()
    if why:
        pytest.skip(why)
    with running_pubsub() as host:
        yield host
