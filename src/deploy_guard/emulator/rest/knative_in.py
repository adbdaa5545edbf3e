"""A v1 (Knative) Service that ``gcloud`` writes, turned into the v2 request the emulator runs.

Pure functions, no I/O. A v1 write goes down the v2 code path, so this module
only translates and checks the shape; the v2 path validates the content
(names, limits, traffic sums, reserved env names) with Cloud Run's messages.

Two rules keep a v1 read-modify-write from changing what it did not mean to:

- **The template is an overlay.** v1 carries a subset of the v2 template
  (revision name, labels, annotations, containers, ``containerConcurrency``,
  ``timeoutSeconds``, ``serviceAccountName``); the rest (scaling, VPC access,
  ...) is kept from the current template. A ``gcloud run services
  update-traffic`` that sends the template back unchanged therefore changes no
  template field and creates no revision, as on Cloud Run.
- **What Cloud Run sets is dropped**: output-only annotations and labels
  (``run.googleapis.com/operation-id``, ``serving.knative.dev/creator``,
  ``cloud.googleapis.com/location``...) that gcloud sends back as it read them.

Anything else that v1 can say and the emulator cannot run is refused with its
path (volumes, ``configMapKeyRef`` env values), never dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.cloud import run_v2
from google.protobuf import duration_pb2, json_format

from deploy_guard.emulator import traffic
from deploy_guard.emulator.names import Location
from deploy_guard.emulator.rest.errors import invalid
from deploy_guard.emulator.rest.knative_out import OUTPUT_ANNOTATIONS, OUTPUT_LABELS


def _obj(value: Any, path: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(f"{path}: expected an object, got {type(value).__name__}")
    return value


def _list(value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid(f"{path}: expected a list, got {type(value).__name__}")
    return value


def _int(value: Any, path: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise invalid(f"{path}: expected an integer, got {value!r}")
    try:
        return int(value)
    except ValueError as exc:
        raise invalid(f"{path}: expected an integer, got {value!r}") from exc


def _strings(value: Any, path: str) -> dict[str, str]:
    data = _obj(value, path)
    if not all(isinstance(v, str) for v in data.values()):
        raise invalid(f"{path}: every value must be a string")
    return dict(data)


@dataclass(frozen=True)
class ServiceWrite:
    """The writable parts of a v1 Service body."""

    name: str
    labels: dict[str, str]
    annotations: dict[str, str]
    template: dict[str, Any]
    traffic: list[run_v2.TrafficTarget]
    #: ``metadata.resourceVersion`` as a v2 etag ('' when the caller sent none).
    etag: str


def parse_service(body: Any, where: Location, project_number: str = "") -> ServiceWrite:
    """Check a v1 Service body's shape and pick out what a write may change.

    ``metadata.namespace`` may be the project id or ``project_number``.
    """
    data = _obj(body, "service")
    kind = data.get("kind", "Service")
    if kind != "Service":
        raise invalid(f"kind {kind!r} is not Service")
    meta = _obj(data.get("metadata"), "metadata")
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise invalid("metadata.name is required: the service's name")
    namespace = meta.get("namespace")
    if namespace not in (None, "", where.project, project_number):
        raise invalid(
            f"metadata.namespace {namespace!r} does not match the namespace of the request "
            f"({where.project!r})"
        )
    labels = _strings(meta.get("labels"), "metadata.labels")
    annotations = _strings(meta.get("annotations"), "metadata.annotations")
    spec = _obj(data.get("spec"), "spec")
    version = meta.get("resourceVersion") or ""
    return ServiceWrite(
        name=name,
        labels={k: v for k, v in labels.items() if k not in OUTPUT_LABELS},
        annotations={k: v for k, v in annotations.items() if k not in OUTPUT_ANNOTATIONS},
        template=_obj(spec.get("template"), "spec.template"),
        traffic=traffic_targets(spec.get("traffic")),
        etag=f'"{version}"' if version else "",
    )


def traffic_targets(value: Any) -> list[run_v2.TrafficTarget]:
    """``spec.traffic`` as v2 targets (``latestRevision`` defaults to "no revision named")."""
    out = []
    for i, item in enumerate(_list(value, "spec.traffic")):
        path = f"spec.traffic[{i}]"
        target = _obj(item, path)
        revision = target.get("revisionName") or ""
        latest = target.get("latestRevision")
        if latest is None:
            latest = not revision
        kind = traffic.LATEST if latest else traffic.REVISION
        out.append(
            run_v2.TrafficTarget(
                type_=kind,
                revision=str(revision),
                percent=_int(target.get("percent"), f"{path}.percent"),
                tag=str(target.get("tag") or ""),
            )
        )
    return out


def container(data: Any, path: str) -> run_v2.Container:
    """A v1 container as a v2 one: the JSON names agree except for secret env values."""
    data = dict(_obj(data, path))
    env = []
    for i, item in enumerate(_list(data.get("env"), f"{path}.env")):
        var = dict(_obj(item, f"{path}.env[{i}]"))
        source = _obj(var.pop("valueFrom", None), f"{path}.env[{i}].valueFrom")
        if source:
            ref = _obj(source.get("secretKeyRef"), f"{path}.env[{i}].valueFrom.secretKeyRef")
            if not ref or set(source) != {"secretKeyRef"}:
                raise invalid(
                    f"{path}.env[{i}].valueFrom: only secretKeyRef is supported "
                    f"(got {', '.join(sorted(source))})"
                )
            var["valueSource"] = {
                "secretKeyRef": {"secret": ref.get("name", ""), "version": ref.get("key", "")}
            }
        env.append(var)
    if env:
        data["env"] = env
    message = run_v2.Container.pb()()
    try:
        json_format.ParseDict(data, message, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise invalid(f"{path}: {exc}") from exc
    wrapped: run_v2.Container = run_v2.Container.wrap(message)
    return wrapped


def overlay_template(
    current: run_v2.RevisionTemplate | None, v1_template: dict[str, Any]
) -> run_v2.RevisionTemplate:
    """``current`` with every field v1 can express replaced by ``v1_template``'s."""
    meta = _obj(v1_template.get("metadata"), "spec.template.metadata")
    spec = _obj(v1_template.get("spec"), "spec.template.spec")
    where = "spec.template.spec"
    if _list(spec.get("volumes"), f"{where}.volumes"):
        raise invalid(f"{where}.volumes: volumes are not emulated; deploy without them")
    out = run_v2.RevisionTemplate(current) if current is not None else run_v2.RevisionTemplate()
    name = meta.get("name") or ""
    if not isinstance(name, str):
        raise invalid(f"spec.template.metadata.name: expected a string, got {name!r}")
    out.revision = name
    out.labels = _strings(meta.get("labels"), "spec.template.metadata.labels")
    out.annotations = _strings(meta.get("annotations"), "spec.template.metadata.annotations")
    containers = _list(spec.get("containers"), f"{where}.containers")
    out.containers = [container(c, f"{where}.containers[{i}]") for i, c in enumerate(containers)]
    out.max_instance_request_concurrency = _int(
        spec.get("containerConcurrency"), f"{where}.containerConcurrency"
    )
    if spec.get("timeoutSeconds") is not None:
        seconds = _int(spec["timeoutSeconds"], f"{where}.timeoutSeconds")
        out.timeout = duration_pb2.Duration(seconds=seconds)
    elif "timeout" in out:
        del out.timeout
    out.service_account = str(spec.get("serviceAccountName") or "")
    return out


def service_spec(
    write: ServiceWrite, full_name: str, current: run_v2.Service | None
) -> run_v2.Service:
    """The v2 Service a v1 create or replace asks for (``current``: the service now)."""
    return run_v2.Service(
        name=full_name,
        labels=write.labels,
        annotations=write.annotations,
        template=overlay_template(current.template if current else None, write.template),
        traffic=write.traffic,
        etag=write.etag,
    )
