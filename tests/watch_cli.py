"""``deploy-guard watch``'s command line, in one place for the tests that hold text to it.

The manifests in ``deploy/watch/``, the pipeline's bake step and ``docs/watch.md`` all spell
out ``deploy-guard watch`` command lines; each is parsed by the real click command, callbacks
included (a bad duration fails here as it would on Cloud Run).
"""

from __future__ import annotations

from typing import Any

import click

from deploy_guard.commands.watch import watch


def accepted() -> frozenset[str]:
    """Every option ``deploy-guard watch`` takes."""
    return frozenset(opt for param in watch.params for opt in param.opts)


def parse(args: list[str]) -> dict[str, Any]:
    """Parse ``args`` (what follows ``watch``) as the command would; raise ValueError if not."""
    try:
        ctx = watch.make_context("watch", list(args))
    except click.ClickException as exc:
        raise ValueError(exc.format_message()) from exc
    return dict(ctx.params)
