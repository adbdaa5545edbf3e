"""``deploy-guard emulator --gcloud-env FILE``: the shell lines that point gcloud at the emulator.

``. FILE`` in a shell and ``gcloud run deploy``, ``gcloud run services
describe``, ``gcloud logging read``... talk to the emulator. Everything is a
``CLOUDSDK_*`` environment variable (gcloud reads every property from
``CLOUDSDK_SECTION_NAME``), so nothing on the machine changes: the user's own
gcloud configuration (``~/.config/gcloud``) is neither read nor written,
because ``CLOUDSDK_CONFIG`` names a private directory the emulator creates and
removes when it stops.

The lines, and why each is there:

- ``CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN`` / ``_LOGGING`` / ``_MONITORING``: the
  front's ``http://`` address; ``CLOUDSDK_PROXY_TYPE=http`` with its
  ``_ADDRESS`` and ``_PORT``: the same front as gcloud's proxy, because
  ``gcloud run`` calls ``REGION-`` + the override's host, which resolves nowhere
  (see :mod:`deploy_guard.emulator.rest`). Through the proxy, no gcloud request
  can leave loopback.
- ``CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDRESOURCEMANAGER``: ``gcloud run
  services replace`` reads the project's number.
- ``CLOUDSDK_AUTH_DISABLE_CREDENTIALS=true``: no account, no token.
- ``CLOUDSDK_CORE_PROJECT``, ``CLOUDSDK_RUN_REGION``, ``CLOUDSDK_RUN_PLATFORM``:
  the emulator's project and region, Cloud Run (fully managed).
- ``CLOUDSDK_CORE_DISABLE_PROMPTS``, ``CLOUDSDK_CORE_SHOULD_PROMPT_TO_ENABLE_API``
  (gcloud would ask Service Usage whether the Run API is enabled),
  ``CLOUDSDK_CORE_CHECK_GCE_METADATA`` (no metadata server probe),
  ``CLOUDSDK_CORE_DISABLE_USAGE_REPORTING``,
  ``CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK``,
  ``CLOUDSDK_SURVEY_DISABLE_PROMPTS``: offline and quiet.
- ``DEPLOY_GUARD_EMULATOR_HOST`` and ``GOOGLE_CLOUD_PROJECT``: ``deploy-guard
  check`` in the same shell reaches the same emulator.
"""

from __future__ import annotations

import os
import shlex
import tempfile
from pathlib import Path


def gcloud_environment(
    *, rest_address: str, grpc_address: str, project: str, region: str, config_dir: str
) -> dict[str, str]:
    """The variables, by name (``rest_address`` and ``grpc_address``: ``host:port``)."""
    host, _, port = rest_address.rpartition(":")
    url = f"http://{rest_address}/"
    return {
        "CLOUDSDK_CONFIG": config_dir,
        "CLOUDSDK_CORE_PROJECT": project,
        "CLOUDSDK_RUN_REGION": region,
        "CLOUDSDK_RUN_PLATFORM": "managed",
        "CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN": url,
        "CLOUDSDK_API_ENDPOINT_OVERRIDES_LOGGING": url,
        "CLOUDSDK_API_ENDPOINT_OVERRIDES_MONITORING": url,
        "CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDRESOURCEMANAGER": url,
        "CLOUDSDK_PROXY_TYPE": "http",
        "CLOUDSDK_PROXY_ADDRESS": host,
        "CLOUDSDK_PROXY_PORT": port,
        "CLOUDSDK_AUTH_DISABLE_CREDENTIALS": "true",
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        "CLOUDSDK_CORE_SHOULD_PROMPT_TO_ENABLE_API": "false",
        "CLOUDSDK_CORE_CHECK_GCE_METADATA": "false",
        "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true",
        "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "true",
        "CLOUDSDK_SURVEY_DISABLE_PROMPTS": "true",
        "DEPLOY_GUARD_EMULATOR_HOST": grpc_address,
        "GOOGLE_CLOUD_PROJECT": project,
    }


def render(env: dict[str, str]) -> str:
    """``export NAME=value`` lines, each value quoted for a POSIX shell."""
    header = "# written by deploy-guard emulator --gcloud-env: '. FILE' points gcloud at it\n"
    return header + "".join(f"export {name}={shlex.quote(value)}\n" for name, value in env.items())


def new_config_dir() -> str:
    """A private, empty gcloud configuration directory (mode 0700)."""
    return tempfile.mkdtemp(prefix="deploy-guard-gcloud-")


def write_env_file(path: str | Path, env: dict[str, str]) -> None:
    """Write the lines to ``path`` at once (a reader never sees half a file)."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(render(env))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
