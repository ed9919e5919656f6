"""A real SMTP/LMTP server on 127.0.0.1 (aiosmtpd) that records the bytes on the wire.

The server can be scripted to refuse senders and recipients, to answer DATA with any
reply (for example the queued-as replies of Postfix, Sendmail or Exim), to close the
connection at a given stage, and to stall.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller, UnixSocketController
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

POSTFIX_QUEUED = "250 2.0.0 Ok: queued as 4Xb1Kq0cZ5z9v"
SENDMAIL_QUEUED = "250 2.0.0 4B3Jx1aB012345 Message accepted for delivery"
EXIM_QUEUED = "250 OK id=1t2AbC-000Xyz-9Q"

USERNAME = "mailer"
PASSWORD = "correct horse battery staple"


@dataclass
class Received:
    """One message as the server received it."""

    mail_from: str
    mail_options: list[str]
    rcpt_tos: list[str]
    content: bytes  # after dot-unstuffing, without the final ".\r\n"


@dataclass
class Script:
    """Replies and faults that the server produces instead of the defaults."""

    mail_reply: str | None = None
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_reply: str = POSTFIX_QUEUED
    # "MAIL", "RCPT" or "DATA": the server closes the connection instead of replying.
    disconnect_at: str | None = None
    # Seconds the server waits before it replies to DATA.
    data_delay: float = 0.0
    # When not None, the server replies to DATA only once this event is set.
    data_gate: threading.Event | None = None


def _close(smtp: SMTP) -> None:
    if smtp.transport is not None:
        smtp.transport.close()


class _Handler:
    def __init__(self, server: RecordingServer) -> None:
        self.server = server

    async def handle_MAIL(
        self, smtp: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        script = self.server.script
        if script.disconnect_at == "MAIL":
            _close(smtp)
            return "421 closing"
        if script.mail_reply:
            return script.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, smtp: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        script = self.server.script
        if script.disconnect_at == "RCPT":
            _close(smtp)
            return "421 closing"
        reply = script.rcpt_replies.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
        script = self.server.script
        if script.disconnect_at == "DATA":
            _close(smtp)
            return "421 closing"
        if script.data_delay:
            await asyncio.sleep(script.data_delay)
        while script.data_gate is not None and not script.data_gate.is_set():
            await asyncio.sleep(0.005)
        content = envelope.original_content or b""
        with self.server.lock:
            self.server.messages.append(
                Received(
                    str(envelope.mail_from),
                    list(envelope.mail_options),
                    list(envelope.rcpt_tos),
                    content,
                )
            )
        return script.data_reply


def _authenticate(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    ok = (
        isinstance(data, LoginPassword)
        and data.login == USERNAME.encode()
        and data.password == PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False)


class RecordingServer:
    """An SMTP or LMTP server in a thread, on TCP 127.0.0.1 or on a Unix socket."""

    def __init__(
        self,
        *,
        lmtp: bool = False,
        unix_path: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        tls_context: ssl.SSLContext | None = None,
        auth: bool = False,
        hostname: str = "mx.example.test",
    ) -> None:
        self.script = Script()
        self.messages: list[Received] = []
        self.wire: list[bytearray] = []
        # Every reply the server has written, on all connections, in order.
        self.replies: list[str] = []
        self.lock = threading.Lock()
        protocol_class = LMTP if lmtp else SMTP
        server = self

        class _Recording(protocol_class):  # type: ignore[misc, valid-type]
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self._wire = bytearray()
                with server.lock:
                    server.wire.append(self._wire)
                super().connection_made(transport)

            def data_received(self, data: bytes) -> None:
                self._wire.extend(data)
                super().data_received(data)

            async def push(self, status: Any) -> None:
                await super().push(status)
                with server.lock:
                    server.replies.append(str(status))

        smtp_kwargs: dict[str, Any] = {
            "server_hostname": hostname,
            "ident": "recording-server",
            "data_size_limit": 64 * 1024 * 1024,
        }
        if tls_context is not None:
            smtp_kwargs["tls_context"] = tls_context
        if auth:
            smtp_kwargs["authenticator"] = _authenticate
            smtp_kwargs["auth_require_tls"] = False

        class _Controller(UnixSocketController if unix_path else Controller):  # type: ignore[misc]
            def factory(self) -> SMTP:
                return _Recording(self.handler, **self.SMTP_kwargs)

            def _trigger_server(self) -> None:
                # Bound to port 0, the real port is known only now.
                if not unix_path:
                    self.port = self.server.sockets[0].getsockname()[1]
                super()._trigger_server()

        if unix_path:
            self.controller: Any = _Controller(
                _Handler(self), unix_socket=unix_path, ssl_context=ssl_context, **smtp_kwargs
            )
        else:
            self.controller = _Controller(
                _Handler(self), hostname="127.0.0.1", port=0, ssl_context=ssl_context, **smtp_kwargs
            )
        self.unix_path = unix_path

    def start(self) -> RecordingServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    @property
    def port(self) -> int:
        return int(self.controller.port)

    def wire_bytes(self, index: int = -1) -> bytes:
        with self.lock:
            return bytes(self.wire[index])

    def data_sections(self, index: int = -1) -> list[bytes]:
        """Return the raw DATA payloads (dot-stuffed, with CRLF.CRLF) seen on one connection."""
        wire = self.wire_bytes(index)
        sections: list[bytes] = []
        start = 0
        while True:
            begin = wire.lower().find(b"data\r\n", start)
            if begin < 0:
                return sections
            body_start = begin + len(b"DATA\r\n")
            end = wire.find(b"\r\n.\r\n", body_start)
            if end < 0:
                return sections
            sections.append(wire[body_start : end + 5])
            start = end + 5
