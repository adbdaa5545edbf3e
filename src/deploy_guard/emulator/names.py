"""Resource names of the Cloud Run Admin API v2, parsed and checked, and its limits.

Cloud Run names are paths: ``projects/P/locations/R/services/S`` and
``.../services/S/revisions/S-0000N-xyz``. A malformed name is the caller's
mistake (INVALID_ARGUMENT); a well-formed name of a project or region this
emulator does not serve is NOT_FOUND, as for a resource that does not exist.
The request timeout's limits live here too: like a name, a template's
``timeout`` is checked before anything changes.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string
from dataclasses import dataclass

from google.cloud import run_v2

from deploy_guard.errors import EmulatorError

#: Cloud Run service ids: lowercase letters, digits and hyphens, starting with a
#: letter, not ending with a hyphen, at most 49 characters.
_SERVICE_ID = re.compile(r"^[a-z](?:[a-z0-9-]{0,47}[a-z0-9])?$")
_REVISION_ID = re.compile(r"^[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_SUFFIX_ALPHABET = string.ascii_lowercase + string.digits
#: Cloud Run's request timeout: 300 s when a template sets none, at most 60 minutes.
DEFAULT_REQUEST_TIMEOUT_S = 300.0
MAX_REQUEST_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class Location:
    """The ``projects/P/locations/R`` this emulator serves."""

    project: str
    region: str

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.region}"

    def check_parent(self, parent: str) -> None:
        """Refuse a parent that is malformed or names another project or region."""
        parts = parent.split("/")
        if len(parts) != 4 or parts[0] != "projects" or parts[2] != "locations":
            raise EmulatorError(
                "INVALID_ARGUMENT",
                f"parent {parent!r} is not of the form projects/PROJECT/locations/REGION",
            )
        if parts[1] != self.project:
            raise EmulatorError(
                "NOT_FOUND",
                f"project {parts[1]!r} not found: this emulator serves project "
                f"{self.project!r} (start it with --project {parts[1]})",
            )
        if parts[3] != self.region:
            raise EmulatorError(
                "NOT_FOUND",
                f"location {parts[3]!r} not found: this emulator serves region "
                f"{self.region!r} (start it with --region {parts[3]})",
            )

    def service_name(self, service_id: str) -> str:
        return f"{self.parent}/services/{service_id}"

    def parse_service(self, name: str) -> str:
        """Return the service id of a full service name, after checking it."""
        head, sep, service_id = name.rpartition("/services/")
        if not sep or "/" in service_id:
            raise EmulatorError(
                "INVALID_ARGUMENT",
                f"name {name!r} is not of the form "
                "projects/PROJECT/locations/REGION/services/SERVICE",
            )
        self.check_parent(head)
        check_service_id(service_id)
        return service_id

    def parse_revision(self, name: str) -> tuple[str, str]:
        """Return ``(service id, revision id)`` of a full revision name."""
        head, sep, revision_id = name.rpartition("/revisions/")
        if not sep or "/" in revision_id or not revision_id:
            raise EmulatorError(
                "INVALID_ARGUMENT",
                f"name {name!r} is not of the form "
                "projects/PROJECT/locations/REGION/services/SERVICE/revisions/REVISION",
            )
        return self.parse_service(head), revision_id


def check_service_id(service_id: str) -> None:
    """Refuse a service id Cloud Run would refuse, saying what the rule is."""
    if not _SERVICE_ID.match(service_id):
        raise EmulatorError(
            "INVALID_ARGUMENT",
            f"service id {service_id!r} is invalid: use 1-49 lowercase letters, digits "
            "and hyphens, starting with a letter and not ending with a hyphen",
        )


def check_revision_id(service_id: str, revision_id: str) -> None:
    """A revision name chosen by the caller must be ``SERVICE-suffix``."""
    if not revision_id.startswith(service_id + "-") or not _REVISION_ID.match(revision_id):
        raise EmulatorError(
            "INVALID_ARGUMENT",
            f"revision name {revision_id!r} is invalid: it must start with "
            f"'{service_id}-' and use lowercase letters, digits and hyphens",
        )


def new_revision_id(service_id: str, number: int) -> str:
    """A Cloud Run style revision id: ``SERVICE-0000N-xyz``."""
    suffix = "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(3))
    return f"{service_id}-{number:05d}-{suffix}"


def short_name(name: str) -> str:
    """The last path segment of a resource name (a revision's short name)."""
    return name.rsplit("/", 1)[-1]


def check_request_timeout(template: run_v2.RevisionTemplate) -> None:
    """Refuse a ``template.timeout`` Cloud Run refuses: it must be positive, at most 3600 s."""
    if "timeout" not in template:
        return
    seconds = template.timeout.total_seconds()
    if not 0 < seconds <= MAX_REQUEST_TIMEOUT_S:
        raise EmulatorError(
            "INVALID_ARGUMENT",
            f"template.timeout: {seconds:g}s is out of range: the request timeout must be "
            f"more than 0 and at most {MAX_REQUEST_TIMEOUT_S:g} seconds (60 minutes)",
        )


def request_timeout_s(revision: run_v2.Revision) -> float:
    """The revision's request timeout in seconds (Cloud Run's 300 s when unset)."""
    if "timeout" in revision and revision.timeout.total_seconds() > 0:
        return float(revision.timeout.total_seconds())
    return DEFAULT_REQUEST_TIMEOUT_S


def project_number(project: str) -> str:
    """The emulator's stand-in for a project's number: 12 digits, the same for a project id.

    One function for every place that shows it (Resource Manager's ``projects.get``, a v1
    namespace, Cloud Logging's quota refusal), so they all name the same project.
    """
    digest = hashlib.sha256(project.encode()).digest()
    return str(100_000_000_000 + int.from_bytes(digest[:8], "big") % 900_000_000_000)
