"""``deploy-guard watch``'s command line, in one place for the tests that hold text to it.

The manifests in ``deploy/watch/``, the pipeline's bake step and ``docs/watch.md`` all spell
out ``deploy-guard watch`` command lines. Until the command exists those lines are held to the
flags of the watch design (issue 12); once ``deploy_guard.commands.watch`` is importable they
are parsed by the real click command instead, with nothing else to change here.
"""

from __future__ import annotations

import importlib
from typing import Any

#: The flags of the watch design (issue 12): where, which policies, for how long, reports,
#: pacing, and the check's auth flags.
DESIGNED: frozenset[str] = frozenset(
    {
        "--service", "--services-file", "--policy", "--for", "--keep-watching", "--report",
        "--summary", "--project", "--region", "--log-interval", "--api-retry",
        "--token-env", "--token-file", "--no-id-token", "--audience",
    }
)  # fmt: skip
#: Flags of DESIGNED that take no value.
SWITCHES: frozenset[str] = frozenset({"--keep-watching", "--no-id-token"})
#: Asked for, not in the design yet: a Cloud Run *service* must listen on its port
#: (deploy/watch/service.yaml). Remove from here once the command has it.
PENDING: frozenset[str] = frozenset({"--health-port"})


def real_command() -> Any | None:
    """The ``watch`` click command, or None while it is not built."""
    try:
        module = importlib.import_module("deploy_guard.commands.watch")
    except ModuleNotFoundError as exc:
        if exc.name != "deploy_guard.commands.watch":
            raise
        return None
    return module.watch


def accepted() -> frozenset[str]:
    """Every option ``deploy-guard watch`` takes: the real command's, else the design's."""
    command = real_command()
    if command is None:
        return DESIGNED | PENDING
    return frozenset(opt for param in command.params for opt in param.opts)


def parse(args: list[str]) -> dict[str, Any]:
    """Parse ``args`` (what follows ``watch``) as the command would; raise ValueError if not.

    With the real command this is click's own parsing, callbacks included (a bad duration
    fails here as it would on Cloud Run). Without it, each flag must be a designed one and
    every flag but a switch takes the next word as its value.
    """
    command = real_command()
    if command is not None:
        import click

        try:
            ctx = command.make_context("watch", list(args))
        except click.ClickException as exc:
            raise ValueError(exc.format_message()) from exc
        return dict(ctx.params)
    values: dict[str, Any] = {}
    words = iter(args)
    for word in words:
        name, eq, inline = word.partition("=")
        if name not in DESIGNED | PENDING:
            raise ValueError(f"no such option: {name}")
        key = name.removeprefix("--").replace("-", "_")
        if name in SWITCHES:
            if eq:
                raise ValueError(f"{name} takes no value")
            values[key] = True
            continue
        value = inline if eq else next(words, None)
        if value is None or value.startswith("--"):
            raise ValueError(f"{name} needs a value")
        if name == "--service":
            values.setdefault(key, []).append(value)
        else:
            values[key] = value
    return values
