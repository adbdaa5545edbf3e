"""The open-files limit: raised as far as allowed, and checked before any probe starts.

Every WebSocket session and every pooled HTTP connection holds one file
descriptor, so 10,000 held sessions need 10,000 of them and some more. A
process may open as many as its *soft* ``RLIMIT_NOFILE`` (often 1,024), and
may raise that itself up to its *hard* limit (often far higher: 524,288 under
systemd, 1,048,576 in a Docker container). Past the soft limit nothing fails
cleanly: sessions fail one by one with EMFILE ("Too many open files"), which
reads like a server problem, and a check could roll back a good revision for it.

So :func:`raise_fd_limit` runs first thing in ``probe``, ``check``, ``rollout``
and ``watch``, and :func:`check_fds` refuses (exit 2), before anything starts,
probes that would need more than the limit, naming the rule, what it needs,
the limit and how to raise it. The need: the connections the rules run together
may hold open at once (``concurrency``, never more than the attempts), plus
what the process has open now, plus :data:`HEADROOM` for what it opens later
(API channels, log streams, the reports, the live page).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from deploy_guard.errors import ConfigError
from deploy_guard.probes.shard import WHOLE, Shard

if TYPE_CHECKING:  # pragma: no cover
    from deploy_guard.policy.model import Policy, Rule

try:
    import resource as _resource
except ImportError:  # pragma: no cover - not a Unix: nothing to raise or read
    _resource = None  # type: ignore[assignment]
#: The ``resource`` module, or None on a platform without it (Windows).
resource: Any = _resource

#: Descriptors kept for what the process opens after the check: Cloud Run,
#: Logging and Monitoring channels, the notifiers' clients, report files, --serve.
HEADROOM = 64
#: What the process is taken to hold already where /proc/self/fd cannot be read.
ASSUMED_OPEN = 32
#: Soft limits tried, largest first, when the hard limit is "unlimited" (macOS
#: refuses RLIM_INFINITY for open files; 10,240 is its OPEN_MAX).
_UNLIMITED_TRIES = (1 << 20, 1 << 16, 10_240)


@dataclass(frozen=True)
class FdLimit:
    """The process's ``RLIMIT_NOFILE``; ``hard`` is None when unlimited."""

    soft: int
    hard: int | None


def current_limit() -> FdLimit | None:
    """The limit on open files now (None where the platform has no ``resource`` module)."""
    if resource is None:  # pragma: no cover
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    unlimited = resource.RLIM_INFINITY
    return FdLimit(
        soft=soft if soft != unlimited else 1 << 62, hard=hard if hard != unlimited else None
    )


def raise_fd_limit() -> FdLimit | None:
    """Raise the soft limit on open files as far as the hard limit (or the system) allows.

    Never lowers it and never fails: where the system refuses, the limit stays
    what it was, and :func:`check_fds` says so before any probe needs more.
    """
    limit = current_limit()
    if limit is None or resource is None:  # pragma: no cover
        return limit
    tries = (limit.hard,) if limit.hard is not None else _UNLIMITED_TRIES
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for soft in tries:
        if soft <= limit.soft:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            break
        except (ValueError, OSError):  # above what the kernel allows: try lower
            continue
    return current_limit()


def open_fds() -> int:
    """File descriptors this process has open now (an assumption where it cannot tell)."""
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            return max(0, len(os.listdir(folder)) - 1)  # listdir's own descriptor
        except OSError:
            continue
    return ASSUMED_OPEN  # pragma: no cover


def connections(rule: Rule, shard: Shard = WHOLE) -> int:
    """Connections a probe rule may hold open at once: one per worker (0 for other kinds);
    ``shard``'s workers only (a shard runs its share of them, and never opens the rest)."""
    if rule.websocket is not None:
        workers = max(1, min(rule.websocket.concurrency, rule.websocket.sessions))
    elif rule.http is not None:  # the pool keeps one keep-alive connection per worker
        workers = max(1, min(rule.http.concurrency, rule.http.requests))
    else:
        return 0
    return workers if shard == WHOLE else len(shard.workers(workers))


def fd_problem(
    rules: Sequence[Rule],
    limit: FdLimit,
    in_use: int,
    *,
    extra: int = 0,
    what: str = "probes",
    shard: Shard = WHOLE,
) -> str | None:
    """Why ``rules``, run together, would run out of file descriptors, or None.

    ``extra`` counts connections held besides the rules' (a watch's canary); ``shard``:
    only that shard's share of each rule's workers runs here.
    """
    counted = [(connections(r, shard), r.name) for r in rules]
    needs = sorted(((n, name) for n, name in counted if n), reverse=True)
    if not needs:
        return None
    own = in_use + HEADROOM
    total = sum(n for n, _ in needs) + extra + own
    if total <= limit.soft:
        return None
    most, name = needs[0]
    others = [f"{other} {n:,}" for n, other in needs[1:]]
    if extra:
        others.append(f"the canary {extra:,}")
    rest = total - most - own
    besides = f", and the rules run beside it {rest:,} more ({', '.join(others)})" if others else ""
    over_hard = limit.hard is not None and limit.hard < total
    hard = (
        f"; its hard limit, {limit.hard:,}, is as far as this process may raise it"
        if over_hard
        else ""
    )
    fix = f"`ulimit -n {total}` in the shell that runs deploy-guard"
    if over_hard:
        fix += (
            " (above the hard limit only root can: `ulimit -Hn`, LimitNOFILE= in a systemd "
            f"unit, `docker run --ulimit nofile={total}:{total}`)"
        )
    whose = "its concurrency" if shard == WHOLE else f"shard {shard}'s share of its concurrency"
    return (
        f"rule {name} may hold {most:,} connections open at once ({whose}), each a "
        f"file descriptor{besides}; with this process's own ({in_use:,} open now, {HEADROOM} "
        f"kept for API connections and reports) the {what} need {total:,}, but the limit on "
        f"open files (RLIMIT_NOFILE) is {limit.soft:,}{hard}. Nothing was probed: raise the "
        f"limit, {fix}, or lower concurrency"
    )


def check_fds(
    rules: Sequence[Rule], *, extra: int = 0, what: str = "probes", shard: Shard = WHOLE
) -> None:
    """Refuse (ConfigError, exit 2) rules that would exceed the limit on open files."""
    limit = current_limit()
    if limit is None:  # pragma: no cover
        return
    problem = fd_problem(rules, limit, open_fds(), extra=extra, what=what, shard=shard)
    if problem is not None:
        raise ConfigError(problem)


def command_rules(policies: Sequence[Policy], command: str) -> tuple[list[Rule], int]:
    """The probe rules a command runs at once, and connections held besides them.

    ``check`` and ``rollout`` run every probe rule of the policies together;
    ``watch`` runs them scaled down to its rounds, beside one canary session.
    """
    from deploy_guard.policy.model import PROBE_KINDS

    if command != "watch":
        return [r for p in policies for r in p.rules if r.kind in PROBE_KINDS], 0
    from deploy_guard.policy.watch import watch_plan, watch_probe_rules

    if not policies:
        return [], 0
    plan: Any = watch_plan(list(policies))
    return watch_probe_rules(list(policies), plan), 1 if plan.canary is not None else 0
