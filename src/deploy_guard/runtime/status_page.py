"""``--serve``: the HTML report, live, while a check, rollout or watch runs.

The page is the ``--html`` report rendered from the report as it stands at each
request (:func:`deploy_guard.report.html.render_html`, from the same redacted
``to_dict()`` the JSON report writes), with a ``<meta http-equiv="refresh">``
so a browser follows the evidence as it arrives: no script. Beside it:

- ``/healthz``: 200 ``ok`` while the command runs (a load balancer's or Cloud
  Run's health check);
- ``/status.json``: the report as JSON (the ``--report`` document so far), with
  ``running``: true until the command ends (its verdict and exit code are placeholders
  until then).

Read-only by construction: every method but ``GET`` and ``HEAD`` is 405, and
nothing it serves can move traffic. By default it listens on 127.0.0.1 only.
On Cloud Run (``K_SERVICE`` or ``CLOUD_RUN_JOB`` set, and ``PORT`` given) it
listens on ``$PORT`` on every interface, since Cloud Run's front end reaches the
container from outside its loopback, behind the service's IAM. Requests are
bounded as :class:`~deploy_guard.runtime.health.HealthServer`'s are.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any

from deploy_guard.errors import ConfigError
from deploy_guard.runtime.health import JSON, HealthServer

#: The port ``--serve`` listens on when it names none (and not on Cloud Run).
DEFAULT_PORT = 8377
#: Seconds between the page's refreshes.
REFRESH_S = 2
HTML = "text/html; charset=utf-8"


def serve_address(value: str, env: Mapping[str, str] | None = None) -> tuple[str, int]:
    """``--serve``'s host and port: ``auto`` (the flag alone), ``PORT`` or ``HOST:PORT``.

    ``auto`` is 127.0.0.1:8377, or ``0.0.0.0:$PORT`` on Cloud Run. A host other
    than loopback must be asked for by name.
    """
    env = os.environ if env is None else env
    if value == "auto":
        on_cloud_run = bool(env.get("K_SERVICE") or env.get("CLOUD_RUN_JOB"))
        if on_cloud_run and env.get("PORT", "").isdigit():
            return "0.0.0.0", int(env["PORT"])
        return "127.0.0.1", DEFAULT_PORT
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", value
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(
            f"--serve {value!r}: give a port (8377), HOST:PORT (127.0.0.1:8377), or the flag "
            "alone (127.0.0.1:8377, or $PORT on Cloud Run)"
        )
    return host.strip("[]") or "127.0.0.1", int(port)


class StatusPage(HealthServer):
    """The live report page, ``/healthz`` and ``/status.json``; see the module docstring."""

    flag = "--serve"

    def __init__(self, host: str, port: int, document: Callable[[], dict[str, Any]]) -> None:
        super().__init__(port, document, host)
        self.document = document

    def respond(self, path: str) -> tuple[int, str, bytes]:
        if path in ("/", "/index.html"):
            return 200, HTML, _live(self.document())
        if path == "/healthz":
            return 200, "text/plain; charset=utf-8", b"ok\n"
        if path == "/status.json":
            document = self.document()
            # until the command ends its verdict and exit code are placeholders, not a decision
            document["running"] = not document.get("finished_at")
            return 200, JSON, json.dumps(document, default=str).encode()
        return 404, JSON, b'{"error": "not found: try /, /healthz or /status.json"}'


def _live(document: dict[str, Any]) -> bytes:
    """The HTML report, refreshing itself every :data:`REFRESH_S` s (no script)."""
    from deploy_guard.report.html import render_html

    page = render_html(document, live=True)
    refresh = f'<meta http-equiv="refresh" content="{REFRESH_S}">'
    head = page.find("<head>")
    if head >= 0:
        page = page[: head + len("<head>")] + refresh + page[head + len("<head>") :]
    return page.encode()
