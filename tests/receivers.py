"""A real HTTP receiver for notification tests: it records what it gets and answers by script.

Importable from any test (``from receivers import Receiver``): pytest puts ``tests/`` on
``sys.path``. It runs a :class:`http.server.ThreadingHTTPServer` on 127.0.0.1, port 0,
in a thread, so it serves an in-process gate's event loop and a ``CliRunner`` run alike.

``answers`` is its script, one entry per request (the last one repeats):

- an int: that status, with ``body`` (default ``ok``);
- ``"hang"``: hold the request open until :meth:`Receiver.release` (or the test ends).

Each request is recorded (path, headers, body) *before* it is answered, and
:attr:`Receiver.arrived` is set, so a test can wait for a request with an event;
``on_request`` (if given) is called then too, in the server's thread: a test reads
there what the sender had done when the request arrived.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: A URL path shaped like a Slack webhook's: its pieces are the credential.
SECRET_PATH = "/services/T0A1B2C3D4/B5E6F7G8H9/xoxW3bh00kS3cr3tT0k3nAbCdEf"


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """See the module docstring."""

    def __init__(
        self,
        answers: list[int | str] | None = None,
        *,
        body: str = "ok",
        path: str = SECRET_PATH,
        on_request: Callable[[], None] | None = None,
    ) -> None:
        self.on_request = on_request
        self.answers: list[int | str] = list(answers or [200])
        self.body = body
        self.path = path
        self.requests: list[Request] = []
        self.arrived = threading.Event()
        self._released = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with receiver._lock:
                    index = len(receiver.requests)
                    receiver.requests.append(Request(self.path, dict(self.headers), body))
                    answer = receiver.answers[min(index, len(receiver.answers) - 1)]
                if receiver.on_request is not None:
                    receiver.on_request()
                receiver.arrived.set()
                if answer == "hang":
                    receiver._released.wait(60)
                    return
                payload = receiver.body.encode()
                self.send_response(int(answer))
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:  # quiet
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}{self.path}"

    def release(self) -> None:
        """Let every held ("hang") request go (unanswered: the connection closes)."""
        self._released.set()

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def dead_url(path: str = SECRET_PATH) -> str:
    """A loopback URL where nothing listens (a port just bound and let go)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"
