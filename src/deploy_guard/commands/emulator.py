"""``deploy-guard emulator``: a local Cloud Run, Cloud Logging and Cloud Monitoring.

Parsing only; the emulator itself is :class:`deploy_guard.emulator.server.Emulator`,
imported when the command runs so that ``deploy-guard --help`` stays fast.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import sys
from typing import Any

import click

from deploy_guard.errors import ConfigError
from deploy_guard.exitcodes import ExitCode
from deploy_guard.log import get_logger

EPILOG = """\b
Point any script or tool at it (the official Google clients, unchanged):
  deploy-guard emulator              # in one terminal; copy its first line
  export DEPLOY_GUARD_EMULATOR_HOST=127.0.0.1:PORT     # in another
  deploy-guard check --project local-project --region us-central1 \\
      --revision chat-agent-00002-abc --policy policies/chat-agent.yaml
In a bash script (exec, so that $EMU_PID is the emulator itself):
  coproc EMU { exec deploy-guard emulator; }
  read -r line <&"${EMU[0]}" && export "$line"
  ...
  kill "$EMU_PID"; wait "$EMU_PID"

\b
In Python, build clients with deploy_guard.gcp.clients.Clients.from_env(), or
pass a channel yourself:
  ServicesClient(transport=ServicesGrpcTransport(
      channel=grpc.insecure_channel("127.0.0.1:PORT")))

\b
A revision's containers[0].command + args runs as a local process with PORT,
K_SERVICE, K_REVISION, K_CONFIGURATION and the template's env; its URL and tag
URLs are loopback addresses in the Service's uri and traffic_statuses[].uri.

\b
Faults: --fault METHOD=ACTION[xN|@N], repeatable. ACTION is a gRPC status
(the call fails), delay:DURATION (served late) or lost[:CODE] (served, then
the client gets CODE, UNAVAILABLE by default: an answer lost on the way, so
the client retries a write that landed) or break:N[:CODE] (a stream such as
TailLogEntries sends N responses, then ends with CODE). Nothing after it: every
call; xN: the next N calls; @N: only the N-th call from the start (@1: the first).
  --fault ListLogEntries=UNAVAILABLEx2   --fault UpdateService=ABORTED
  --fault ListTimeSeries=delay:2s        --fault UpdateService=delay:3s@2
  --fault UpdateService=lost@1           --fault GetService=UNAVAILABLE@3
  --fault TailLogEntries=break:3

\b
gcloud against it (docs/gcloud.md): --gcloud-env FILE writes export lines
(a private CLOUDSDK_CONFIG, endpoint overrides, gcloud's proxy = the HTTP/JSON
front on --rest-port); then '. FILE' and gcloud run deploy / services describe
/ services update-traffic / logging read work locally, your own gcloud
configuration untouched.
  deploy-guard emulator --gcloud-env /tmp/emu.env &   # wait for its first line
  . /tmp/emu.env && gcloud run services list

\b
As slow as Google Cloud (log ingestion delay, metric points minutes late,
empty log pages with a token), repeatable: --realistic --seed 7
Stop it with Ctrl-C, SIGTERM or SIGHUP: every revision process stops with it.
See docs/emulator.md (it walks through a check and a rollback by hand).
"""


@click.command("emulator", epilog=EPILOG)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="gRPC port on 127.0.0.1 (0: any free port, printed on the first line).",
)
@click.option(
    "--rest-port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Port of the HTTP/JSON front on 127.0.0.1 that gcloud talks to (0: any free port).",
)
@click.option(
    "--gcloud-env",
    "gcloud_env",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    metavar="FILE",
    help="Once serving, write 'export NAME=value' lines to FILE that point gcloud at the "
    "emulator ('. FILE'), with a private gcloud config directory (removed at exit).",
)
@click.option(
    "--project",
    default="local-project",
    show_default=True,
    metavar="PROJECT",
    help="Project it serves.",
)
@click.option(
    "--region", default="us-central1", show_default=True, metavar="REGION", help="Region it serves."
)
@click.option(
    "--metrics-delay",
    default="0s",
    show_default=True,
    metavar="DURATION",
    help="Hold metric points back this long (Cloud Monitoring reports minutes late).",
)
@click.option(
    "--logs-delay",
    default=None,
    metavar="DURATION",
    help="List log entries only this long after they arrive (Cloud Logging's ingestion "
    "delay).  [default: 0s; 3s with --realistic]",
)
@click.option(
    "--route-delay",
    default=None,
    metavar="DURATION",
    help="Route to a new revision only this long after it is Ready (the service "
    "reconciles).  [default: 0s; 2s with --realistic]",
)
@click.option(
    "--startup-timeout",
    default="30s",
    show_default=True,
    metavar="DURATION",
    help=(
        "How long a revision gets to listen on $PORT when its container has no "
        "startup_probe and its template no timeout."
    ),
)
@click.option(
    "--fault",
    "faults",
    multiple=True,
    metavar="METHOD=ACTION[xN|@N]",
    help=(
        "Make an RPC fail (METHOD=UNAVAILABLE), answer late (METHOD=delay:2s) or lose its "
        "answer after applying it (METHOD=lost): always, the next N calls (xN) or only "
        "the N-th (@N). Repeatable; see below."
    ),
)
@click.option(
    "--realistic",
    is_flag=True,
    help=(
        "Be as slow and partial as Google Cloud: log entries listed 3 s late, metric "
        "points sampled per 60 s and shown 30 to 180 s late, routing 2 s after Ready, "
        "some ListLogEntries pages empty with a next_page_token. --logs-delay and "
        "--route-delay override its numbers (0s included). Against it, a short check needs "
        "check --log-settle for late lines and sees no metric points."
    ),
)
@click.option(
    "--seed",
    type=int,
    default=None,
    metavar="N",
    help="Seed of --realistic's random draws (metric lags, empty pages): a run repeats "
    "exactly with the same seed. Default 0.",
)
@click.option(
    "--logging-read-quota",
    default=None,
    metavar="N/min",
    help="Refuse ListLogEntries beyond N a minute per project with RESOURCE_EXHAUSTED, in "
    "Cloud Logging's words (its entries.list quota: 60 or 120/min) [default: no quota].",
)
@click.option(
    "--workdir",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Working directory of revision processes (default: the current one).",
)
def emulator(
    port: int,
    rest_port: int,
    gcloud_env: str | None,
    project: str,
    region: str,
    metrics_delay: str,
    logs_delay: str | None,
    route_delay: str | None,
    realistic: bool,
    seed: int | None,
    startup_timeout: str,
    faults: tuple[str, ...],
    workdir: str | None,
    logging_read_quota: str | None = None,
) -> None:
    """Run Cloud Run Admin v2, Cloud Logging v2 and Cloud Monitoring v3 locally.

    It listens on 127.0.0.1 only and prints DEPLOY_GUARD_EMULATOR_HOST=127.0.0.1:PORT
    as its first line once it serves; set that variable and deploy-guard (or any
    script using its client factory) talks to the emulator instead of Google Cloud.
    """
    from deploy_guard.emulator.faults import parse_duration, parse_spec

    try:
        # Validate everything before starting anything.
        if seed is not None and not realistic:
            raise ConfigError(
                "--seed sets the draws of --realistic and does nothing alone: "
                "add --realistic, or drop --seed"
            )
        specs = [parse_spec(f) for f in faults]
        delay_s = parse_duration(metrics_delay)
        # not given: None, so that --realistic's own numbers apply (an explicit 0s wins)
        logs_delay_s = None if logs_delay is None else parse_duration(logs_delay)
        route_delay_s = None if route_delay is None else parse_duration(route_delay)
        startup_s = parse_duration(startup_timeout)
        read_quota = _per_minute(logging_read_quota) if logging_read_quota else None
        code = asyncio.run(
            _serve(
                dict(
                    project=project,
                    region=region,
                    port=port,
                    metrics_delay=delay_s,
                    logs_delay=logs_delay_s,
                    route_delay=route_delay_s,
                    realistic=realistic,
                    seed=seed,
                    startup_timeout=startup_s,
                    workdir=workdir,
                    rest_port=rest_port,
                    logging_read_quota=read_quota,
                ),
                specs,
                gcloud_env,
            )
        )
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(int(ExitCode.USAGE))
    sys.exit(code)


def _per_minute(text: str) -> int:
    """``--logging-read-quota``: ``60/min`` -> 60 (ConfigError when it is not a rate)."""
    from deploy_guard.analysis.budget import parse_rate

    try:
        return round(parse_rate(text))
    except ValueError as exc:
        raise ConfigError(f"--logging-read-quota {exc}") from None


#: Signals that stop the emulator cleanly. SIGHUP too: closing the terminal it
#: runs in must not leave revision processes behind (they run in their own
#: sessions, so the hang-up does not reach them).
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


async def _serve(options: dict[str, Any], specs: list[Any], gcloud_env: str | None = None) -> int:
    """Serve until SIGINT, SIGTERM or SIGHUP, then stop every revision process.

    With ``gcloud_env``, the gcloud lines are written once it serves and before
    the first stdout line, so a script that waited for that line can source them.
    """
    from deploy_guard.emulator.server import Emulator

    emu = Emulator(**options)
    for spec in specs:
        emu.faults.apply(spec)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    received: list[str] = []
    config_dir: str | None = None

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig.name)
        stop.set()

    from deploy_guard import signals

    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        if signals.pending():  # it came while the command was starting: start nothing
            return 0
        await emu.start()
        if gcloud_env is not None:
            config_dir = _write_gcloud_env(emu, gcloud_env)
        # The first stdout line is the contract: scripts wait for it, then connect.
        sys.stdout.write(f"DEPLOY_GUARD_EMULATOR_HOST={emu.address}\n")
        sys.stdout.flush()
        await stop.wait()
        # Bound here, not at import: the CLI configures logging after importing commands.
        get_logger("deploy_guard.commands.emulator").info(
            "emulator_stopping", signal=received[0] if received else None
        )
    finally:
        await emu.stop()
        if config_dir is not None:
            shutil.rmtree(config_dir, ignore_errors=True)
        for sig in _STOP_SIGNALS:
            loop.remove_signal_handler(sig)
    return 0


def _write_gcloud_env(emu: Any, path: str) -> str:
    """Write the gcloud lines for ``emu`` to ``path``; return the config dir it made."""
    from deploy_guard.emulator.rest import gcloud_env

    config_dir = gcloud_env.new_config_dir()
    env = gcloud_env.gcloud_environment(
        rest_address=emu.rest_address,
        grpc_address=emu.address,
        project=emu.project,
        region=emu.region,
        config_dir=config_dir,
    )
    try:
        gcloud_env.write_env_file(path, env)
    except OSError as exc:
        shutil.rmtree(config_dir, ignore_errors=True)
        raise ConfigError(f"cannot write --gcloud-env {path}: {exc.strerror or exc}") from exc
    get_logger("deploy_guard.commands.emulator").info(
        "emulator_gcloud_env_written", path=path, config_dir=config_dir
    )
    return config_dir
