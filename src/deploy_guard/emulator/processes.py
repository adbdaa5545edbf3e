"""A revision's container, run as a local process.

Cloud Run starts a container and routes to it once it listens on ``$PORT``.
Here the container is ``containers[0].command + args`` run directly (the image
is recorded, never pulled), in its own process group so that stopping it also
stops anything it spawned. Every line it prints goes to the emulator's
:class:`~deploy_guard.emulator.contracts.LogSink`, and the last lines are kept
so a failed start can say why in the revision's condition message.

A start that fails is also in the revision's system log, in Cloud Run's words:
``Container called exit(N).`` (WARNING) when the process ended before it
listened, then ``Default STARTUP TCP probe failed 1 time consecutively for
container "NAME" on port P. The instance was not started.`` (ERROR).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from deploy_guard.emulator.contracts import LogSink, RevisionRef
from deploy_guard.log import get_logger, redact_text

log = get_logger("deploy_guard.emulator.processes")

#: How many of the last output lines a failure message quotes.
TAIL_LINES = 20
#: How long a process gets to exit after SIGTERM before SIGKILL.
STOP_GRACE_S = 3.0


@dataclass(frozen=True)
class StartFailure:
    """Why a revision did not become ready: the text of its Ready condition."""

    reason: Literal["ContainerFailed", "HealthCheckFailed"]
    message: str


def exit_message(code: int) -> str:
    """Cloud Run's system-log line for a container that ended with ``code``."""
    return (
        f"Container called exit({code})."
        if code >= 0
        else f"Container terminated on signal {-code}."
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A loopback port nobody listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class RevisionProcess:
    """One running revision: start it, wait until it listens, stop it."""

    def __init__(
        self,
        ref: RevisionRef,
        argv: Sequence[str],
        env: Mapping[str, str],
        sink: LogSink,
        *,
        cwd: str | None = None,
        host: str = "127.0.0.1",
        container_name: str = "",
    ) -> None:
        self.ref = ref
        self.container_name = container_name
        self.argv = list(argv)
        self.host = host
        self.port = free_port(host)
        self.cwd = cwd
        self._env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",  # so a Python revision's lines arrive as printed
            **env,
            "PORT": str(self.port),
            "K_SERVICE": ref.service,
            "K_REVISION": ref.revision,
            "K_CONFIGURATION": ref.configuration,
        }
        self._sink = sink
        self._tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._proc: asyncio.subprocess.Process | None = None
        self._pumps: list[asyncio.Task[None]] = []
        #: Set by stop(): an exit after it is the emulator's doing, not a crash.
        self._stopping = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    def tail(self) -> list[str]:
        """The last lines the process printed (stdout and stderr, interleaved)."""
        return list(self._tail)

    async def start(self, timeout_s: float) -> StartFailure | None:
        """Start the process and wait until its port accepts connections.

        Returns ``None`` when ready, or why it failed (it is stopped then).
        """
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self._env,
                cwd=self.cwd,
                start_new_session=True,  # own process group: stop() reaches its children
            )
        except (OSError, ValueError) as exc:  # ValueError: a NUL or '=' in argv or env
            return StartFailure(
                "ContainerFailed",
                f"Revision '{self.ref.revision}' could not start its command {self.argv!r}: {exc}",
            )
        assert self._proc.stdout is not None
        assert self._proc.stderr is not None
        self._pumps = [
            asyncio.create_task(self._pump(self._proc.stdout, "stdout")),
            asyncio.create_task(self._pump(self._proc.stderr, "stderr")),
        ]
        log.info(
            "revision_process_started",
            revision=self.ref.revision,
            pid=self._proc.pid,
            port=self.port,
        )
        failure = await self._wait_listening(timeout_s)
        if failure is not None:
            await self.stop()
            # The pumps end at EOF once the process is gone: quote its last words.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*self._pumps), 1.0)
            self._log_start_failure(failure)
            failure = StartFailure(failure.reason, failure.message + self._tail_text())
        return failure

    def _log_start_failure(self, failure: StartFailure) -> None:
        """What Cloud Run's system log says about an instance that did not start."""
        assert self._proc is not None
        now = datetime.now(UTC)
        code = self._proc.returncode
        try:
            if failure.reason == "ContainerFailed" and code is not None:
                self._sink.system(self.ref, "WARNING", exit_message(code), now)
            container = f' for container "{self.container_name}"' if self.container_name else ""
            self._sink.system(
                self.ref,
                "ERROR",
                f"Default STARTUP TCP probe failed 1 time consecutively{container} on port "
                f"{self.port}. The instance was not started.",
                now,
            )
        except Exception:  # a sink bug must not hide the start failure itself
            log.exception("revision_system_log_failed", revision=self.ref.revision)

    async def _wait_listening(self, timeout_s: float) -> StartFailure | None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout_s
        delay = 0.01
        exited = asyncio.ensure_future(self._proc.wait())
        try:
            return await self._poll_port(exited, deadline, timeout_s, delay)
        finally:
            exited.cancel()

    async def _poll_port(
        self, exited: asyncio.Future[int], deadline: float, timeout_s: float, delay: float
    ) -> StartFailure | None:
        while True:
            if exited.done():
                return self._exited_failure(exited.result())
            try:
                _reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                pass
            else:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                return None
            if time.monotonic() >= deadline:
                return StartFailure(
                    "HealthCheckFailed",
                    f"Revision '{self.ref.revision}' is not ready and cannot serve traffic. "
                    "The user-provided container failed to start and listen on the port "
                    f"defined by the PORT={self.port} environment variable within the "
                    f"allocated timeout of {timeout_s:g} s.",
                )
            # Wait for the process to exit or the next connection attempt, whichever first.
            await asyncio.wait({exited}, timeout=delay)
            delay = min(delay * 1.5, 0.05)

    def _exited_failure(self, code: int) -> StartFailure:
        how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
        return StartFailure(
            "ContainerFailed",
            f"Revision '{self.ref.revision}' is not ready and cannot serve traffic. "
            f"The user-provided container {how} before listening on PORT={self.port}.",
        )

    def _tail_text(self) -> str:
        lines = self.tail()
        if not lines:
            return " It printed nothing."
        return " Last output:\n" + "\n".join(lines)

    async def _pump(self, stream: asyncio.StreamReader, name: Literal["stdout", "stderr"]) -> None:
        while True:
            try:
                raw = await stream.readline()
            except (ValueError, asyncio.LimitOverrunError):
                # A line longer than the stream's limit: take what is buffered.
                raw = await stream.read(65536)
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self._tail.append(redact_text(line))
            try:
                self._sink.revision_output(self.ref, name, line, datetime.now(UTC))
            except Exception:  # a sink bug must not stop the process's output
                log.exception("revision_output_sink_failed", revision=self.ref.revision)

    async def died(self) -> int | None:
        """Wait until the process exits; its exit status, or None if stop() ended it.

        Negative statuses are signals, as in ``asyncio.subprocess``.
        """
        if self._proc is None:
            return None
        code = await self._proc.wait()
        return None if self._stopping else code

    async def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it after a grace period. Idempotent."""
        proc = self._proc
        if proc is None:
            return
        self._stopping = True
        if proc.returncode is None:
            self._signal_group(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_GRACE_S)
            except TimeoutError:
                self._signal_group(proc.pid, signal.SIGKILL)
                await proc.wait()
            log.info("revision_process_stopped", revision=self.ref.revision, pid=proc.pid)
        # Children that outlived the leader still belong to its group.
        self._signal_group(proc.pid, signal.SIGKILL)
        for pump in self._pumps:
            if not pump.done():
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(pump, 1.0)

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
