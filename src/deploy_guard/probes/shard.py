"""Which share of a probe rule's attempts one shard of N runs.

A rule with ``concurrency`` C runs W = min(C, attempts) workers; attempt ``n`` (from 1) is
worker ``((n - 1) mod W) + 1``'s, and worker ``k`` belongs to shard ``(k - 1) mod N`` (shards
count from 0, as ``CLOUD_RUN_TASK_INDEX`` does). So N shards together run exactly the
workers, the users (``user-<k>``) and the session numbers (``{n}``) of one unsharded run, and
their concurrency adds up to the rule's: no user ever has two sessions open at once, and
users stay unique across shards. Session ids are random per session (64 bits), unique too.

The split is by worker, so a rule with fewer workers than shards leaves the shards past
its workers without any of its attempts (they record zero planned); :func:`idle_note` says
so before anything starts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from deploy_guard.errors import ConfigError

#: What Cloud Run sets in each task of a job (0-based index, task count).
TASK_INDEX = "CLOUD_RUN_TASK_INDEX"
TASK_COUNT = "CLOUD_RUN_TASK_COUNT"
#: Shards one measurement set may have (a Cloud Run job allows up to 10,000 tasks).
MAX_SHARDS = 10_000


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0 <= index < count)."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns_worker(self, k: int) -> bool:
        """True when worker ``k`` (from 1) runs in this shard."""
        return (k - 1) % self.count == self.index

    def workers(self, total: int) -> list[int]:
        """This shard's workers among ``1..total``."""
        return list(range(self.index + 1, total + 1, self.count))

    def attempts(self, planned: int, workers: int) -> int:
        """How many of ``planned`` attempts, run by ``workers`` workers, are this shard's."""
        if planned <= 0 or workers <= 0:
            return 0
        return sum(len(range(k, planned + 1, workers)) for k in self.workers(workers))


#: The whole of every rule: what an unsharded run is.
WHOLE = Shard(0, 1)


def parse_shard(text: str, environ: Mapping[str, str] | None = None) -> Shard:
    """``"K/N"`` (0 <= K < N), or ``"auto"``: Cloud Run's task index and count.

    ConfigError (exit 2) naming the fix for anything else.
    """
    env = os.environ if environ is None else environ
    if text.strip() == "auto":
        raw_index, raw_count = env.get(TASK_INDEX), env.get(TASK_COUNT)
        if raw_index is None or raw_count is None:
            raise ConfigError(
                f"--shard auto reads {TASK_INDEX} and {TASK_COUNT}, which Cloud Run sets in "
                "each task of a job; outside a job pass --shard K/N (K from 0)"
            )
        return _shard(raw_index, raw_count, f"{TASK_INDEX}={raw_index}, {TASK_COUNT}={raw_count}")
    index, slash, count = text.partition("/")
    if not slash:
        raise ConfigError(f"--shard {text!r}: expected K/N (for example 0/4) or auto")
    return _shard(index, count, f"--shard {text}")


def _shard(raw_index: str, raw_count: str, where: str) -> Shard:
    try:
        index, count = int(raw_index.strip()), int(raw_count.strip())
    except ValueError:
        raise ConfigError(f"{where}: K and N must be whole numbers") from None
    if not 1 <= count <= MAX_SHARDS:
        raise ConfigError(f"{where}: N must be between 1 and {MAX_SHARDS}")
    if not 0 <= index < count:
        raise ConfigError(
            f"{where}: K counts from 0, as {TASK_INDEX} does: 0/{count} .. {count - 1}/{count}"
        )
    return Shard(index, count)


def idle_note(rule: str, workers: int, shard: Shard) -> str | None:
    """Why this shard runs none of a rule's attempts (fewer workers than shards), or None."""
    if shard.workers(workers):
        return None
    return (
        f"{rule}: shard {shard} runs none of its attempts: it has {workers} worker"
        f"{'s' if workers != 1 else ''} (concurrency) for {shard.count} shards, and attempts "
        "are shared out by worker"
    )
