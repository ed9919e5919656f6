"""The aiosmtplib adapter: how aiosmtplib reports replies, and which methods are wrapped.

Methods are wrapped on ``aiosmtplib.SMTP`` itself, so user subclasses and names imported
before ``instrument()`` share the wrappers. Three entry points need no wrapper of their own
because they only call wrapped methods:

- ``aiosmtplib.send()`` creates an ``SMTP`` client and awaits its ``sendmail`` or
  ``send_message``, so ``from aiosmtplib import send`` done before ``instrument()`` is
  traced as well;
- ``SMTP.sendmail_sync`` and ``SMTP.send_message_sync`` run the coroutine methods with
  ``asyncio.run``, whose task starts with a copy of the caller's ``contextvars``, so the
  send span's parent is the caller's current span.

The argument layouts are read from the installed version's signatures: aiosmtplib 2.x
accepts the message, sender and recipients by keyword, while 3.0 and later make them
positional-only. A wrapper passes every call on in the form the caller used.

NOTE: aiosmtplib serialises ``sendmail`` calls on one connection with a lock taken
inside ``sendmail``. The send span starts before that, because the message and the
``SIZE=`` computed from it must carry the span's context. On a connection shared by
several tasks, the span and the duration metric therefore include the wait for that lock.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import logging
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

from opentelemetry.instrumentation.utils import unwrap
from packaging.requirements import Requirement
from wrapt import wrap_function_wrapper

from opentelemetry_instrumentation_smtp import package
from opentelemetry_instrumentation_smtp._wrappers import Handler, async_wrapper, sync_wrapper
from opentelemetry_instrumentation_smtp.attributes import Reply, decode_reply_text, reply_from_pair
from opentelemetry_instrumentation_smtp.calls import Handlers
from opentelemetry_instrumentation_smtp.connection import ConnectionHandlers
from opentelemetry_instrumentation_smtp.invocation import Arg
from opentelemetry_instrumentation_smtp.settings import Settings
from opentelemetry_instrumentation_smtp.transaction import Endpoint

logger = logging.getLogger(__name__)

_TARGET_ATTRIBUTE = "_opentelemetry_smtp_target"

# An Arg whose keyword name no call can use: the parameter is positional-only (3.0 and
# later) or keyword-only, so Arg.get/replace only look where the caller can pass it.
_NO_KEYWORD = "<positional-only>"
_NO_POSITION = sys.maxsize

# aiosmtplib's default ports (aiosmtplib.smtp: SMTP_PORT, SMTP_TLS_PORT,
# SMTP_STARTTLS_PORT), the same in 2.0 to 5.1.
_SMTP_PORT = 25
_TLS_PORT = 465
_STARTTLS_PORT = 587

# (method name, handler name, coroutine?) for each method of aiosmtplib.SMTP that is
# wrapped. "auth_xoauth2" exists from aiosmtplib 4.0; absent methods are skipped.
_METHODS: tuple[tuple[str, str, bool], ...] = (
    ("send_message", "send_message", True),
    ("sendmail", "sendmail", True),
    ("mail", "mail", True),
    ("rcpt", "rcpt", True),
    ("data", "data", True),
    ("rset", "reset", True),
    ("close", "reset", False),
    ("connect", "connect", True),
    ("starttls", "starttls", True),
    ("login", "login", True),
    ("auth_crammd5", "login", True),
    ("auth_plain", "login", True),
    ("auth_login", "login", True),
    ("auth_xoauth2", "login", True),
)

# The (class, method name) pairs that instrument_aiosmtplib() wrapped.
_wrapped: list[tuple[type, str]] = []


class AiosmtplibDialect:
    """The aiosmtplib facts the core needs: reply and exception forms, addresses, sizes."""

    def __init__(
        self, connect: Callable[..., Any], default_token: object, sendmail: Callable[..., Any]
    ) -> None:
        # aiosmtplib 5.1 and later count SIZE= after their line-ending normalisation;
        # earlier releases declare len() of the message as given, which differs from the
        # bytes sent for LF-only messages. The code is checked rather than the version.
        code = getattr(inspect.unwrap(sendmail), "__code__", None)
        self.exact_size_option = code is not None and (
            "normalize_message_line_endings" in code.co_names
        )
        self._hostname = _arg(connect, "hostname")
        self._port = _arg(connect, "port")
        self._socket_path = _arg(connect, "socket_path")
        self._sock = _arg(connect, "sock")
        self._use_tls = _arg(connect, "use_tls")
        self._start_tls = _arg(connect, "start_tls")
        # connect() treats this value (aiosmtplib.typing.Default.token) as "not given".
        self._default_token = default_token

    def protocol_name(self, client: Any) -> str:
        return "smtp"

    def endpoint(self, client: Any) -> Endpoint:
        target = getattr(client, _TARGET_ATTRIBUTE, None)
        if not isinstance(target, Endpoint):
            target = self._configured_target(client, (), {})
        transport = getattr(client, "transport", None)
        if transport is None:
            return target
        raw_socket = transport.get_extra_info("socket")
        if raw_socket is not None and raw_socket.family == getattr(socket, "AF_UNIX", None):
            return Endpoint(target.server_address, None, target.server_address, None, "unix")
        peer = transport.get_extra_info("peername")
        if not isinstance(peer, tuple) or len(peer) < 2:
            return Endpoint(target.server_address, target.server_port, transport="tcp")
        peer_address, peer_port = str(peer[0]), int(peer[1])
        return Endpoint(
            target.server_address or peer_address,
            target.server_port if target.server_port is not None else peer_port,
            peer_address,
            peer_port,
            "tcp",
        )

    def connect_target(
        self, client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Endpoint:
        return self._configured_target(client, args, kwargs)

    def remember_target(self, client: Any, target: Endpoint) -> None:
        setattr(client, _TARGET_ATTRIBUTE, target)

    def reply_from_result(self, result: Any) -> Reply | None:
        return reply_from_pair(result)

    def reply_from_exception(self, exception: BaseException) -> Reply | None:
        code = getattr(exception, "code", None)
        if isinstance(code, int) and not isinstance(code, bool):
            return Reply(code, decode_reply_text(str(getattr(exception, "message", ""))))
        # SMTPRecipientsRefused carries one SMTPRecipientRefused per recipient.
        refused = getattr(exception, "recipients", None)
        if isinstance(refused, list) and refused:
            return self.reply_from_exception(refused[-1])
        return None

    def payload_size(self, payload: str | bytes) -> int:
        data = payload.encode("ascii", errors="replace") if isinstance(payload, str) else payload
        # The length after aiosmtplib's normalisation, counted without building the copy:
        # every lone CR and every lone LF becomes CRLF, and a missing final CRLF is added.
        crlf = data.count(b"\r\n")
        lone_line_breaks = data.count(b"\r") - crlf + data.count(b"\n") - crlf
        ends_with_line_break = data.endswith((b"\r", b"\n"))
        return len(data) + lone_line_breaks + (0 if ends_with_line_break else 2)

    def _configured_target(
        self, client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Endpoint:
        """Return where ``connect(*args, **kwargs)`` connects, as aiosmtplib resolves it."""
        hostname = self._option(self._hostname, args, kwargs, client.hostname)
        port = self._option(self._port, args, kwargs, client.port)
        socket_path = self._option(self._socket_path, args, kwargs, client.socket_path)
        sock = self._option(self._sock, args, kwargs, client.sock)
        use_tls = self._use_tls.get(args, kwargs)
        use_tls = client.use_tls if use_tls is None else use_tls
        start_tls = self._option(
            self._start_tls, args, kwargs, getattr(client, "_start_tls_on_connect", None)
        )

        if socket_path is not None:
            return Endpoint(os.fsdecode(socket_path), None, transport="unix")
        if sock is not None:
            unix = sock.family == getattr(socket, "AF_UNIX", None)
            return Endpoint(hostname, None if unix else port, transport="unix" if unix else "tcp")
        if not port and use_tls:
            port = _TLS_PORT
        elif not port and start_tls:
            port = _STARTTLS_PORT
        elif not port:
            port = _SMTP_PORT
        return Endpoint(str(hostname or "localhost"), int(port), transport="tcp")

    def _option(self, arg: Arg, args: tuple[Any, ...], kwargs: dict[str, Any], current: Any) -> Any:
        value = arg.get(args, kwargs, self._default_token)
        return current if value is self._default_token else value


def _arg(function: Callable[..., Any], name: str) -> Arg:
    """Return where ``function`` (an unbound method) takes the parameter ``name``."""
    parameters = list(inspect.signature(function).parameters.values())[1:]
    for position, parameter in enumerate(parameters):
        if parameter.name != name:
            continue
        if parameter.kind is inspect.Parameter.POSITIONAL_ONLY:
            return Arg(position, _NO_KEYWORD)
        if parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD:
            return Arg(position, name)
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY:
            return Arg(_NO_POSITION, name)
    raise LookupError(f"{function.__qualname__} has no parameter {name!r}")


def _skip_reason(module: Any) -> str | None:
    """Return why the importable aiosmtplib is not instrumented, or None to go ahead."""
    supported = package._aiosmtplib_instruments
    requirement = Requirement(supported)
    try:
        installed: str | None = importlib.metadata.version(requirement.name)
    except importlib.metadata.PackageNotFoundError:
        installed = getattr(module, "__version__", None)
    if not isinstance(installed, str):
        return f"its version is unknown (supported: {supported})"
    if not requirement.specifier.contains(installed, prereleases=True):
        return f"version {installed} is outside the supported range ({supported})"
    return None


def _build_handlers(
    smtp_class: Any, settings: Settings, default_token: object
) -> dict[str, Handler]:
    dialect = AiosmtplibDialect(smtp_class.connect, default_token, smtp_class.sendmail)
    sendmail = smtp_class.sendmail
    send_message = smtp_class.send_message
    handlers = Handlers(
        settings,
        dialect,
        sendmail=(
            _arg(sendmail, "sender"),
            _arg(sendmail, "recipients"),
            _arg(sendmail, "message"),
        ),
        send_message=(
            _arg(send_message, "message"),
            _arg(send_message, "sender"),
            _arg(send_message, "recipients"),
        ),
        mail=(_arg(smtp_class.mail, "sender"), _arg(smtp_class.mail, "options")),
        rcpt=_arg(smtp_class.rcpt, "recipient"),
        data=_arg(smtp_class.data, "message"),
    )
    connection = ConnectionHandlers(settings, dialect)
    return {
        "send_message": handlers.send_message,
        "sendmail": handlers.sendmail,
        "mail": handlers.mail,
        "rcpt": handlers.rcpt,
        "data": handlers.data,
        "reset": handlers.reset,
        "connect": connection.connect,
        "starttls": connection.starttls,
        "login": connection.login,
    }


def instrument_aiosmtplib(settings: Settings) -> bool:
    """Wrap aiosmtplib when a supported version is importable; return whether it was.

    When aiosmtplib is missing, out of the supported range or not usable, nothing is
    wrapped and one log line gives the reason. smtplib is instrumented regardless.
    """
    try:
        import aiosmtplib
        from aiosmtplib.typing import Default
    except ModuleNotFoundError as exc:
        if exc.name != "aiosmtplib":
            logger.warning("aiosmtplib is not instrumented because importing it failed (%s)", exc)
            return False
        logger.info("aiosmtplib is not installed, so only smtplib is instrumented")
        return False
    except Exception as exc:
        logger.warning(
            "aiosmtplib is not instrumented because importing it failed (%s: %s)",
            type(exc).__name__,
            exc,
        )
        return False

    reason = _skip_reason(aiosmtplib)
    if reason is not None:
        logger.warning("aiosmtplib is not instrumented because %s; smtplib still is", reason)
        return False

    smtp_class = aiosmtplib.SMTP
    try:
        by_name = _build_handlers(smtp_class, settings, Default.token)
    except (LookupError, TypeError, ValueError, AttributeError) as exc:
        logger.warning(
            "aiosmtplib is not instrumented because its API differs from the supported "
            "versions (%s)",
            exc,
        )
        return False

    for method, handler_name, is_coroutine in _METHODS:
        if not hasattr(smtp_class, method):
            continue
        handler = by_name[handler_name]
        wrapper = async_wrapper(handler) if is_coroutine else sync_wrapper(handler)
        wrap_function_wrapper(smtp_class, method, wrapper)
        _wrapped.append((smtp_class, method))
    return True


def uninstrument_aiosmtplib() -> None:
    """Undo ``instrument_aiosmtplib``."""
    while _wrapped:
        smtp_class, method = _wrapped.pop()
        unwrap(smtp_class, method)
