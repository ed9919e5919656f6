"""The smtplib adapter: how smtplib reports replies, and which methods are wrapped.

Methods are wrapped on ``smtplib.SMTP`` itself, so ``SMTP_SSL``, ``LMTP``, user
subclasses and names imported before ``instrument()`` all share the wrappers.
``LMTP.connect`` is wrapped as well because LMTP overrides it for Unix sockets.
"""

from __future__ import annotations

import smtplib
import socket
from typing import Any

from wrapt import wrap_function_wrapper

from opentelemetry_instrumentation_smtp._wrappers import sync_wrapper
from opentelemetry_instrumentation_smtp.attributes import Reply, decode_reply_text, reply_from_pair
from opentelemetry_instrumentation_smtp.calls import Handlers
from opentelemetry_instrumentation_smtp.connection import ConnectionHandlers
from opentelemetry_instrumentation_smtp.invocation import Arg
from opentelemetry_instrumentation_smtp.settings import Settings
from opentelemetry_instrumentation_smtp.transaction import Endpoint

_TARGET_ATTRIBUTE = "_opentelemetry_smtp_target"
_PEER_ATTRIBUTE = "_opentelemetry_smtp_peer"

# (class, method name) pairs that instrument() wraps and uninstrument() unwraps.
WRAPPED_METHODS: tuple[tuple[type, str], ...] = (
    (smtplib.SMTP, "send_message"),
    (smtplib.SMTP, "sendmail"),
    (smtplib.SMTP, "mail"),
    (smtplib.SMTP, "rcpt"),
    (smtplib.SMTP, "data"),
    (smtplib.SMTP, "rset"),
    (smtplib.SMTP, "close"),
    (smtplib.SMTP, "connect"),
    (smtplib.SMTP, "starttls"),
    (smtplib.SMTP, "login"),
    (smtplib.LMTP, "connect"),
)


class SmtplibDialect:
    """The facts about smtplib that the core depends on."""

    # sendmail() declares len() of the bytes it then passes to data().
    exact_size_option = True

    def protocol_name(self, client: Any) -> str:
        return "lmtp" if isinstance(client, smtplib.LMTP) else "smtp"

    def endpoint(self, client: Any) -> Endpoint:
        target = getattr(client, _TARGET_ATTRIBUTE, None)
        server_address: str | None = None
        server_port: int | None = None
        if isinstance(target, Endpoint):
            server_address, server_port = target.server_address, target.server_port
        else:
            # Connected before instrument(): smtplib keeps the host name for TLS.
            host = getattr(client, "_host", None)
            server_address = host if isinstance(host, str) and host else None

        sock = getattr(client, "sock", None)
        if sock is None:
            return Endpoint(server_address, server_port)
        if sock.family == getattr(socket, "AF_UNIX", None):
            return Endpoint(server_address, None, server_address, None, "unix")

        # getpeername() is a system call, so its result is cached per socket.
        cached = getattr(client, _PEER_ATTRIBUTE, None)
        if cached is not None and cached[0] is sock:
            peer = cached[1]
        else:
            try:
                peer = sock.getpeername()
            except OSError:
                peer = None
            setattr(client, _PEER_ATTRIBUTE, (sock, peer))
        if not peer:
            return Endpoint(server_address, server_port, transport="tcp")
        peer_address, peer_port = str(peer[0]), int(peer[1])
        return Endpoint(
            server_address or peer_address,
            server_port if server_port is not None else peer_port,
            peer_address,
            peer_port,
            "tcp",
        )

    def connect_target(
        self, client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Endpoint:
        # The same defaults and "host:port" parsing as SMTP.connect.
        host = Arg(0, "host").get(args, kwargs, "localhost")
        port = Arg(1, "port").get(args, kwargs, 0)
        if isinstance(host, str) and host.startswith("/"):
            return Endpoint(host, None, transport="unix")
        if not port and isinstance(host, str) and host.find(":") == host.rfind(":"):
            name, _, number = host.rpartition(":")
            if name and number.isdigit():
                host, port = name, int(number)
        if not port:
            port = getattr(client, "default_port", None)
        return Endpoint(str(host), int(port) if port else None, transport="tcp")

    def remember_target(self, client: Any, target: Endpoint) -> None:
        setattr(client, _TARGET_ATTRIBUTE, target)

    def reply_from_result(self, result: Any) -> Reply | None:
        return reply_from_pair(result)

    def reply_from_exception(self, exception: BaseException) -> Reply | None:
        if isinstance(exception, smtplib.SMTPResponseException):
            return Reply(exception.smtp_code, decode_reply_text(exception.smtp_error))
        if isinstance(exception, smtplib.SMTPRecipientsRefused) and exception.recipients:
            code, text = list(exception.recipients.values())[-1]
            return Reply(code, decode_reply_text(text))
        return None

    def payload_size(self, payload: str | bytes) -> int:
        if isinstance(payload, str):
            # smtplib converts str payloads to CRLF line endings and ASCII.
            fix_eols = smtplib._fix_eols  # type: ignore[attr-defined]
            return len(fix_eols(payload).encode("ascii", errors="replace"))
        return len(payload)


def instrument_smtplib(settings: Settings) -> None:
    """Wrap the smtplib methods listed in ``WRAPPED_METHODS``."""
    dialect = SmtplibDialect()
    handlers = Handlers(
        settings,
        dialect,
        sendmail=(Arg(0, "from_addr"), Arg(1, "to_addrs"), Arg(2, "msg")),
        send_message=(Arg(0, "msg"), Arg(1, "from_addr"), Arg(2, "to_addrs")),
        mail=(Arg(0, "sender"), Arg(1, "options")),
        rcpt=Arg(0, "recip"),
        data=Arg(0, "msg"),
    )
    connection = ConnectionHandlers(settings, dialect)
    by_name = {
        "send_message": handlers.send_message,
        "sendmail": handlers.sendmail,
        "mail": handlers.mail,
        "rcpt": handlers.rcpt,
        "data": handlers.data,
        "rset": handlers.reset,
        "close": handlers.reset,
        "connect": connection.connect,
        "starttls": connection.starttls,
        "login": connection.login,
    }
    for cls, name in WRAPPED_METHODS:
        wrap_function_wrapper(cls, name, sync_wrapper(by_name[name]))
