"""The asyncio milter server: TCP and Unix sockets, one protocol instance per MTA connection.

Running the milter in-process, as the tests and benchmarks do::

    server = MilterServer(
        ["inet:127.0.0.1:0"],
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )
    await server.start()
    host, port = server.address  # the ephemeral port the OS chose
    ...
    await server.close()

``server.sockets`` lists the listening sockets. :meth:`MilterServer.close` is the graceful
shutdown that SIGTERM triggers in the command-line program.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
from collections.abc import Callable, Sequence

from opentelemetry import metrics, trace

from .codec import ProtocolError
from .config import MilterConfig
from .limits import AcceptErrorHandler, RateLimitedLog
from .listen import ListenAddress
from .session import MilterSession
from .tracing import (
    ERROR_DISCONNECTED,
    ERROR_INTERNAL,
    ERROR_PROTOCOL,
    ERROR_SHUTDOWN,
    ERROR_TIMEOUT,
    MessageDoneCallback,
    MilterTelemetry,
)

_logger = logging.getLogger(__name__)

DEFAULT_SOCKET_MODE = 0o660
# After the shutdown deadline, aborted connections report their close within one event
# loop iteration. This bound only keeps shutdown finite if one never does.
ABORT_GRACE_SECONDS = 5.0


class _Connection(asyncio.Protocol):
    """One MTA connection: feeds the session and enforces the read timeouts.

    Timeouts are checked lazily: each read only stores its time, and one timer per
    connection fires at the earliest possible deadline and re-arms itself if data came in.
    """

    def __init__(self, server: MilterServer) -> None:
        self._server = server
        self._loop = asyncio.get_running_loop()
        self.session = MilterSession(server.config, server.telemetry)
        self.closed: asyncio.Future[None] = self._loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.peer = "unknown peer"
        self._last_read = self._loop.time()
        self._timer: asyncio.TimerHandle | None = None
        self._ended = False
        self._quick_ack: Callable[[], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer = _describe(transport.get_extra_info("peername"))
        if self._server.at_capacity():
            # Closing at once frees the file descriptor, and the MTA applies its
            # milter_default_action without waiting for a timeout.
            self._server.reject(self)
            transport.abort()
            return
        self._quick_ack = _quick_ack_function(transport)
        self._server.connection_started(self)
        self._arm_timer(self._server.config.idle_timeout)

    @property
    def idle(self) -> bool:
        return not self.session.in_message and not self.session.codec.has_partial_frame

    def _arm_timer(self, delay: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(self._last_read + delay, self._check_timeout)

    def _timeout(self) -> float:
        config = self._server.config
        if self.session.codec.has_partial_frame:
            return config.frame_timeout
        return config.idle_timeout

    def _check_timeout(self) -> None:
        timeout = self._timeout()
        if self._loop.time() < self._last_read + timeout:
            self._arm_timer(timeout)
            return
        _logger.warning(
            "closing MTA connection %s: no data for %.0f s%s",
            self.peer,
            timeout,
            " inside a message" if self.session.in_message else "",
        )
        self._end(ERROR_TIMEOUT)
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        self._last_read = self._loop.time()
        transport = self.transport
        assert transport is not None
        if self._quick_ack is not None:
            self._quick_ack()
        session = self.session
        try:
            reply = session.receive_data(data)
        except ProtocolError as error:
            _logger.warning("closing MTA connection %s: protocol error: %s", self.peer, error)
            self._end(ERROR_PROTOCOL)
            transport.abort()
            return
        except Exception as error:
            # A bug, or input that a check let through. Only this connection ends, and
            # the MTA applies its milter_default_action to the message in progress.
            _logger.error(
                "closing MTA connection %s: internal error: %s: %s",
                self.peer,
                type(error).__name__,
                error,
            )
            _logger.debug("internal error on MTA connection %s", self.peer, exc_info=True)
            self._end(ERROR_INTERNAL)
            transport.abort()
            return
        if reply:
            transport.write(reply)
        if session.closed or (self._server.stopping and self.idle):
            transport.close()
        elif session.codec.has_partial_frame:
            self._arm_timer(self._server.config.frame_timeout)

    def eof_received(self) -> bool:
        try:
            self.session.codec.receive_eof()
        except ProtocolError as error:
            _logger.warning("closing MTA connection %s: protocol error: %s", self.peer, error)
            self._end(ERROR_PROTOCOL)
            return False
        if self.session.in_message:
            _logger.warning("MTA connection %s closed inside a message", self.peer)
        self._end(ERROR_DISCONNECTED)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and not self._ended:
            _logger.warning("MTA connection %s failed: %s", self.peer, exc)
        self._end(ERROR_DISCONNECTED)
        self.forget()

    def forget(self) -> None:
        """Stop the timer, stop tracking the connection and mark it closed, once."""
        if self._timer is not None:
            self._timer.cancel()
        self._server.connection_ended(self)
        if not self.closed.done():
            self.closed.set_result(None)

    def _end(self, error_type: str) -> None:
        """Record the message in progress, if any, as ended early; only the first call counts."""
        if self._ended:
            return
        self._ended = True
        try:
            self.session.connection_lost(error_type)
        except Exception as error:
            _logger.error(
                "cannot record the message in progress on MTA connection %s: %s: %s",
                self.peer,
                type(error).__name__,
                error,
            )
            _logger.debug("recording failed on MTA connection %s", self.peer, exc_info=True)

    def abort_at_deadline(self) -> None:
        """Abort the connection because the shutdown deadline passed."""
        self._end(ERROR_SHUTDOWN)
        if self.transport is not None:
            self.transport.abort()


class MilterServer:
    """A milter that records a span per message; see the module docstring for its use.

    ``listen`` takes values such as ``inet:127.0.0.1:0`` (an ephemeral port) or
    ``unix:/run/milter.sock``. ``on_message_done`` is passed to :class:`MilterTelemetry`.
    """

    def __init__(
        self,
        listen: Sequence[str] = ("inet:127.0.0.1:0",),
        *,
        config: MilterConfig | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        on_message_done: MessageDoneCallback | None = None,
        socket_mode: int = DEFAULT_SOCKET_MODE,
    ) -> None:
        self._addresses = [ListenAddress.parse(text) for text in listen]
        self.config = config or MilterConfig()
        self.telemetry = MilterTelemetry(
            tracer_provider,
            meter_provider,
            record_addresses=self.config.record_addresses,
            on_message_done=on_message_done,
        )
        self._socket_mode = socket_mode
        self._servers: list[asyncio.Server] = []
        self._connections: set[_Connection] = set()
        self._rejections = RateLimitedLog(_logger)
        self._accept_errors: AcceptErrorHandler | None = None
        self.stopping = False

    @property
    def connections(self) -> set[_Connection]:
        """The open MTA connections."""
        return set(self._connections)

    @property
    def sockets(self) -> list[socket.socket]:
        """The listening sockets, once :meth:`start` has returned."""
        return [sock for server in self._servers for sock in server.sockets]

    @property
    def address(self) -> tuple[str, int] | str:
        """The first listening socket's ``(host, port)``, or its path for a Unix socket."""
        name = self.sockets[0].getsockname()
        if isinstance(name, tuple):
            return str(name[0]), int(name[1])
        return str(name)

    async def start(self) -> None:
        """Open every listening socket. Raises ``OSError`` if one cannot be opened."""
        loop = asyncio.get_running_loop()
        self._accept_errors = AcceptErrorHandler(loop)
        self._accept_errors.install()
        try:
            await self._listen(loop)
        except BaseException:
            self._accept_errors.uninstall()
            raise

    async def _listen(self, loop: asyncio.AbstractEventLoop) -> None:
        for address in self._addresses:
            if address.family == "unix":
                _remove_stale_socket(address.path)
                server = await loop.create_unix_server(lambda: _Connection(self), path=address.path)
                os.chmod(address.path, self._socket_mode)
            else:
                server = await loop.create_server(
                    lambda: _Connection(self),
                    host=address.host,
                    port=address.port,
                    reuse_address=True,
                )
            self._servers.append(server)
            for sock in server.sockets:
                _logger.info("milter listening on %s", _describe(sock.getsockname()))

    async def close(self, timeout: float | None = None) -> None:
        """Stop accepting, let messages in progress end, then close every connection.

        Connections between messages close at once. A connection still inside a message
        after ``timeout`` seconds (default: the configuration's ``shutdown_timeout``) is
        aborted, and the MTA applies its ``milter_default_action`` to that message.
        """
        self.stopping = True
        for server in self._servers:
            server.close()
        for connection in list(self._connections):
            if connection.idle and connection.transport is not None:
                connection.transport.close()
        waiting = {connection.closed for connection in self._connections}
        if waiting:
            limit = self.config.shutdown_timeout if timeout is None else timeout
            _done, pending = await asyncio.wait(waiting, timeout=limit)
            if pending:
                await self._abort_remaining(limit)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        for address in self._addresses:
            if address.family == "unix":
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(address.path)
        self._servers.clear()
        if self._accept_errors is not None:
            self._accept_errors.uninstall()
            self._accept_errors = None

    async def _abort_remaining(self, limit: float) -> None:
        remaining = list(self._connections)
        _logger.warning(
            "shutdown deadline of %.1f s passed: aborting %d MTA connections, "
            "%d of them inside a message",
            limit,
            len(remaining),
            sum(1 for connection in remaining if connection.session.in_message),
        )
        for connection in remaining:
            connection.abort_at_deadline()
        waiting = {connection.closed for connection in remaining}
        _done, pending = await asyncio.wait(waiting, timeout=ABORT_GRACE_SECONDS)
        if pending:
            stuck = [connection for connection in remaining if not connection.closed.done()]
            _logger.error(
                "%d MTA connections did not close %.1f s after the abort; forgetting them",
                len(stuck),
                ABORT_GRACE_SECONDS,
            )
            for connection in stuck:
                connection.forget()

    def at_capacity(self) -> bool:
        """Return True when ``max_connections`` or more MTA connections are open."""
        return len(self._connections) >= self.config.max_connections

    def reject(self, connection: _Connection) -> None:
        """Log, at most once a minute, that a new MTA connection is closed for the limit."""
        self._rejections.warning(
            "closing new MTA connection %s: %d connections are open, the maximum "
            "(--max-connections)",
            connection.peer,
            len(self._connections),
        )

    def connection_started(self, connection: _Connection) -> None:
        """Track a new MTA connection."""
        self._connections.add(connection)
        self.telemetry.connection_opened()

    def connection_ended(self, connection: _Connection) -> None:
        """Forget a closed MTA connection."""
        if connection in self._connections:
            self._connections.discard(connection)
            self.telemetry.connection_closed()


def _quick_ack_function(transport: asyncio.Transport) -> Callable[[], None] | None:
    """Return a function that makes Linux acknowledge received TCP data at once.

    With the no-reply flags, the MTA sends several small frames in a row and the milter
    sends nothing back. Postfix 3.7 does not disable Nagle's algorithm on milter sockets,
    so it delays each further frame until the previous one is acknowledged, and delayed
    ACKs made that wait up to 40 ms per SMTP command in a measurement. Linux clears
    TCP_QUICKACK after some reads, so the option is set again after every read.
    """
    quick_ack = getattr(socket, "TCP_QUICKACK", None)
    sock = transport.get_extra_info("socket")
    if quick_ack is None or sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    setsockopt = sock.setsockopt

    def acknowledge() -> None:
        # It runs on every read, and try/except costs about 0.25 µs less than
        # contextlib.suppress (timeit, CPython 3.11).
        try:  # noqa: SIM105
            setsockopt(socket.IPPROTO_TCP, quick_ack, 1)
        except OSError:
            pass

    acknowledge()
    return acknowledge


def _remove_stale_socket(path: str) -> None:
    """Remove a socket file left by an earlier run; refuse to remove anything else."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(f"cannot listen on {path}: it exists and is not a socket")
    os.unlink(path)


def _describe(name: object) -> str:
    if isinstance(name, tuple) and len(name) >= 2:
        return f"{name[0]}:{name[1]}"
    return str(name) or "unix socket"
