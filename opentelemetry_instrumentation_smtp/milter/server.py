"""The asyncio milter server: TCP and Unix sockets, one task per MTA connection.

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
from collections.abc import Sequence
from dataclasses import dataclass

from opentelemetry import metrics, trace

from .codec import ProtocolError
from .config import MilterConfig
from .session import MilterSession
from .tracing import (
    ERROR_DISCONNECTED,
    ERROR_PROTOCOL,
    ERROR_TIMEOUT,
    MessageDoneCallback,
    MilterTelemetry,
)

_logger = logging.getLogger(__name__)

_READ_SIZE = 256 * 1024
DEFAULT_SOCKET_MODE = 0o660


@dataclass(frozen=True)
class ListenAddress:
    """A parsed ``--listen`` value: ``inet:HOST:PORT``, ``inet6:HOST:PORT`` or ``unix:PATH``."""

    family: str
    host: str = ""
    port: int = 0
    path: str = ""

    @classmethod
    def parse(cls, text: str) -> ListenAddress:
        """Parse Postfix's milter socket syntax; raise ``ValueError`` on anything else."""
        kind, _, rest = text.partition(":")
        if kind in ("unix", "local"):
            if not rest:
                raise ValueError(f"invalid listen address {text!r}: the socket path is missing")
            return cls("unix", path=rest)
        if kind in ("inet", "inet6"):
            host, _, port_text = rest.rpartition(":")
            host = host.removeprefix("[").removesuffix("]")
            if not host or not port_text.isdigit() or int(port_text) > 65535:
                raise ValueError(
                    f"invalid listen address {text!r}: use inet:HOST:PORT with a port of 0 to 65535"
                )
            return cls("inet", host=host, port=int(port_text))
        raise ValueError(
            f"invalid listen address {text!r}: use inet:HOST:PORT, inet6:HOST:PORT or unix:PATH"
        )


class _Connection:
    """One MTA connection's task, session and transport, as the shutdown needs them."""

    __slots__ = ("session", "task", "timed_out", "writer")

    def __init__(self, session: MilterSession, writer: asyncio.StreamWriter) -> None:
        self.session = session
        self.writer = writer
        self.task = asyncio.current_task()
        self.timed_out = False

    def abort_on_timeout(self) -> None:
        self.timed_out = True
        self.writer.transport.abort()

    @property
    def idle(self) -> bool:
        return not self.session.in_message and not self.session.codec.has_partial_frame


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
        self._stopping = False

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
        for address in self._addresses:
            if address.family == "unix":
                _remove_stale_socket(address.path)
                server = await asyncio.start_unix_server(self._serve, path=address.path)
                os.chmod(address.path, self._socket_mode)
            else:
                server = await asyncio.start_server(
                    self._serve, host=address.host, port=address.port, reuse_address=True
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
        self._stopping = True
        for server in self._servers:
            server.close()
        for connection in list(self._connections):
            if connection.idle:
                connection.writer.close()
        tasks = {conn.task for conn in self._connections if conn.task is not None}
        if tasks:
            limit = self.config.shutdown_timeout if timeout is None else timeout
            _done, pending = await asyncio.wait(tasks, timeout=limit)
            if pending:
                _logger.warning(
                    "shutdown deadline of %.1f s passed: aborting %d connections inside a message",
                    limit,
                    len(pending),
                )
                for connection in list(self._connections):
                    connection.writer.transport.abort()
                await asyncio.wait(pending)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        for address in self._addresses:
            if address.family == "unix":
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(address.path)
        self._servers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = MilterSession(self.config, self.telemetry)
        connection = _Connection(session, writer)
        peer = _describe(writer.get_extra_info("peername"))
        self._connections.add(connection)
        self.telemetry.connection_opened()
        try:
            await self._read_loop(reader, connection, peer)
        except ProtocolError as error:
            _logger.warning("closing MTA connection %s: protocol error: %s", peer, error)
            session.connection_lost(ERROR_PROTOCOL)
        except (ConnectionError, OSError) as error:
            _logger.warning("MTA connection %s failed: %s", peer, error)
            session.connection_lost(ERROR_DISCONNECTED)
        finally:
            self._connections.discard(connection)
            self.telemetry.connection_closed()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_loop(
        self, reader: asyncio.StreamReader, connection: _Connection, peer: str
    ) -> None:
        session = connection.session
        config = self.config
        loop = asyncio.get_running_loop()
        writer = connection.writer
        while not session.closed:
            if self._stopping and connection.idle:
                return
            if session.codec.has_partial_frame:
                timeout = config.frame_timeout
            else:
                timeout = config.idle_timeout
            timer = loop.call_later(timeout, connection.abort_on_timeout)
            try:
                data = await reader.read(_READ_SIZE)
            finally:
                timer.cancel()
            if not data:
                self._connection_ended(connection, peer, timeout)
                return
            reply = session.receive_data(data)
            if reply:
                writer.write(reply)
                await writer.drain()

    def _connection_ended(self, connection: _Connection, peer: str, timeout: float) -> None:
        session = connection.session
        if connection.timed_out:
            _logger.warning(
                "closing MTA connection %s: no data for %.0f s%s",
                peer,
                timeout,
                " inside a message" if session.in_message else "",
            )
            session.connection_lost(ERROR_TIMEOUT)
            return
        if self._stopping and connection.idle:
            session.connection_lost(ERROR_DISCONNECTED)
            return
        session.codec.receive_eof()
        if session.in_message:
            _logger.warning("MTA connection %s closed inside a message", peer)
        session.connection_lost(ERROR_DISCONNECTED)


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
