"""The service's HTTP server: uvicorn on a socket bound here, graceful on SIGTERM / SIGINT.

The socket is bound (and listening, with a deep backlog) before uvicorn starts, so the
caller knows the port (0 picks one) and a port in use is one sentence, not a traceback.
A request uvicorn's HTTP parser refuses before the application sees it (``Content-Length:
abc``, a negative or doubled length) gets a JSON 400 too, and one log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import json
import logging
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cv_pipelines.serving.service import DetectionService

logger = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and the loopback addresses (127.0.0.0/8, ::1); a name is not resolved."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A TCP socket bound to (host, port) and listening; ``ConfigurationError`` with one sentence otherwise."""
    from cv_pipelines.errors import ConfigurationError

    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, UnicodeError) as exc:
        message = f"cannot serve on {host}: it is not an address of this machine ({exc})"
    else:
        try:
            # Another server listening on the port still refuses; a past one's TIME_WAIT does not.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
            return sock
        except OSError as exc:
            sock.close()
            message = _bind_refusal(host, port, exc)
    raise ConfigurationError(message)


def _bind_refusal(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            f"port {port} on {host} is already in use; stop what listens there or pick another --port (0: any free one)"
        )
    if exc.errno == errno.EACCES:
        return f"binding port {port} on {host} is not permitted (ports below 1024 need privileges); pick another --port"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot serve on {host}: it is not an address of this machine"
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"


def _protocol_class(on_refused: Callable[[], None]) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (httptools if installed, else h11) answering a malformed request with JSON.

    uvicorn answers what its parser refuses with a text/plain 400 of its own; this one
    says why in the service's ``{"error": ...}`` form and counts it (``on_refused``).
    """
    try:
        import httptools  # noqa: F401
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as Base
    except ImportError:  # pragma: no cover - uvicorn without its [standard] extras
        from uvicorn.protocols.http.h11_impl import H11Protocol as Base  # type: ignore[assignment]

    class JsonErrorProtocol(Base):
        def send_400_response(self, msg: str) -> None:
            # Called inside uvicorn's `except <parser error>:`, so the parser's reason is at hand.
            reason = sys.exception()
            detail = f" ({reason})" if reason is not None and str(reason) else ""
            body = json.dumps(
                {
                    "error": f"the request is not valid HTTP/1.1{detail}; send the image bytes as the body "
                    "with a Content-Length header that is a whole number of bytes"
                }
            ).encode()
            head = (
                b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
                b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n"
            )
            on_refused()
            self.transport.write(head + body)
            self.transport.close()

    return JsonErrorProtocol


def _uvicorn_server_class() -> type:
    import uvicorn

    class GracefulServer(uvicorn.Server):
        """uvicorn's server, whose SIGTERM / SIGINT end ``run`` normally (exit status 0).

        uvicorn re-raises the signal it caught once it has shut down, so that a SIGTERM
        would still end the process as killed (143); a service that drained its requests
        has finished its work, so it returns instead.
        """

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            handled = (signal.SIGINT, signal.SIGTERM)
            original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

    return GracefulServer


class Server:
    """``service`` over HTTP on a bound socket: ``serve_forever`` (blocks), ``shutdown`` (from another thread).

    ``token``: the bearer token ``/predict``, ``/predict/batch``, ``/stats`` and ``/metrics``
    ask for (None: open). ``sock``: an already bound, listening socket (else one is bound
    to host and port, ``backlog`` deep). ``graceful_timeout_s``: how long requests in
    flight may take to finish once shutdown begins.
    """

    def __init__(
        self,
        service: DetectionService,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token: str | None = None,
        sock: socket.socket | None = None,
        backlog: int = 2048,
        graceful_timeout_s: float = 30,
    ) -> None:
        import uvicorn

        from cv_pipelines.serving.app import create_app

        self.service = service
        self.socket = sock if sock is not None else bind_socket(host, port, backlog)
        self._address = tuple(self.socket.getsockname())  # kept: still known once the socket is closed
        self.app = create_app(service, token=token)
        config = uvicorn.Config(
            self.app,
            http=_protocol_class(self.app.state.refused_by_parser),
            lifespan="off",
            log_config=None,  # the process's logging stays as it is (Kedro's, pytest's)
            access_log=False,
            backlog=backlog,
            timeout_graceful_shutdown=max(1, round(graceful_timeout_s)),
            server_header=False,
        )
        self._uvicorn = _uvicorn_server_class()(config)
        self._running = threading.Event()
        self._stopped = threading.Event()

    @property
    def server_address(self) -> tuple[Any, ...]:
        """(host, port) the socket is bound to: port 0 became the one picked."""
        return self._address

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self.server_address[1])

    def serve_forever(self) -> None:
        """Serve until ``shutdown`` or SIGTERM / SIGINT (in the main thread); the requests in flight finish."""
        self._running.set()
        try:
            self._uvicorn.run(sockets=[self.socket])
        finally:
            self._stopped.set()

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop accepting, let the requests in flight finish, and wait until ``serve_forever`` returned."""
        self._uvicorn.should_exit = True
        if self._running.is_set():
            self._stopped.wait(timeout)

    def server_close(self) -> None:
        """Close the socket and stop the service's workers."""
        self.socket.close()
        self.service.close()

    @contextlib.contextmanager
    def running(self) -> Iterator[Server]:
        """Serve in a background thread for the duration of the block (tests, the main job)."""
        thread = threading.Thread(target=self.serve_forever, name="cv-serving", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.shutdown()
            thread.join()
            self.server_close()
