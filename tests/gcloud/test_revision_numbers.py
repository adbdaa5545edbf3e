"""Revision numbers as Cloud Run gives them: the service's generation at the write, never twice.

gcloud names a revision itself when it deploys with ``--tag`` or
``--revision-suffix``: ``SERVICE-{generation + 1:05d}-xyz``, the generation it read
plus one, i.e. the generation of its own write (``_AddRevisionForcingChange`` in
gcloud's ``serverless_operations.py``). The emulator numbered the revisions it
named by a count of revisions instead, so after a traffic-only write (a generation
without a revision) a gcloud-named ``-00003-`` was followed by a server-named
``-00003-``. Now the server numbers by the write's generation too (Knative names a
revision by its Configuration's generation, ``%s-%05d``), so numbers never repeat.
With the Python client: gcloud's naming rule is one line. One emulator per module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from deploy_guard.emulator.server import EmulatorThread
from deploy_guard.gcp.clients import Clients


def number(revision: str) -> int:
    """``chat-00004-xyz`` -> 4."""
    return int(revision.rsplit("/", 1)[-1].split("-")[-2])


def test_a_server_named_revision_is_numbered_by_its_write_s_generation(
    deploy: Callable[..., Any],
    gcp_clients: Clients,
    emulator: EmulatorThread,
    app_template: Callable[..., Any],
    fast_polling: Any,
) -> None:
    from google.cloud import run_v2

    services = gcp_clients.services()
    svc = deploy("numbered")
    assert (number(svc.latest_created_revision), svc.generation) == (1, 1)
    first = svc.latest_created_revision.rsplit("/", 1)[-1]

    # update-traffic: a generation that creates no revision
    svc.traffic = [run_v2.TrafficTarget(revision=first, percent=100, tag="stable")]
    svc = services.update_service(service=svc).result(timeout=60, polling=fast_polling)
    assert svc.generation == 2

    # gcloud run deploy --tag: gcloud names the revision, generation read + 1
    named = f"numbered-{svc.generation + 1:05d}-abc"
    svc.template = app_template(env={"V": "2"}, revision=named)
    svc = services.update_service(service=svc).result(timeout=60, polling=fast_polling)
    assert svc.latest_created_revision.endswith(f"/{named}")
    assert svc.generation == 3

    # a deploy gcloud does not name: the server numbers it by this write's generation
    svc = deploy("numbered", env={"V": "3"})
    assert (number(svc.latest_created_revision), svc.generation) == (4, 4)

    revisions = gcp_clients.revisions().list_revisions(parent=svc.name)
    numbers = sorted(number(r.name) for r in revisions)
    assert numbers == [1, 3, 4]  # 2 was the traffic write's; none repeats
