"""Spans for connection setup: ``smtp connect``, ``smtp starttls`` and ``smtp login``.

"The server was down", "TLS failed" and "authentication failed" are common reasons why
mail never leaves, so each step gets a CLIENT span of its own. AUTH arguments are never
read: only the reply code and the exception class are recorded.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from opentelemetry_instrumentation_smtp import attributes as attrs
from opentelemetry_instrumentation_smtp._diagnostics import guarded
from opentelemetry_instrumentation_smtp.attributes import Reply
from opentelemetry_instrumentation_smtp.invocation import Call, tracing_enabled
from opentelemetry_instrumentation_smtp.settings import Settings
from opentelemetry_instrumentation_smtp.transaction import Dialect, Endpoint

# Guards against a second span when an override calls the base class (LMTP.connect
# calls SMTP.connect for TCP) or when connect() itself runs STARTTLS and login.
_IN_STEP: contextvars.ContextVar[tuple[int, str] | None] = contextvars.ContextVar(
    "opentelemetry_smtp_connection_step", default=None
)


class ConnectDialect(Dialect, Protocol):
    def connect_target(
        self, client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Endpoint:
        """Return the server address and port that a connect call is about to use."""

    def remember_target(self, client: Any, target: Endpoint) -> None:
        """Keep the address the client connected to, for the spans of later sends."""


class ConnectionHandlers:
    """Handlers that trace the connection steps of one client library."""

    def __init__(self, settings: Settings, dialect: ConnectDialect) -> None:
        self.settings = settings
        self.dialect = dialect

    def connect(self, client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call | None:
        target = guarded(
            "reading the connect target", self.dialect.connect_target, client, args, kwargs
        )
        if target is not None:
            guarded("keeping the connect target", self.dialect.remember_target, client, target)
        return self._step(client, "connect", args, kwargs, target, expect=(220,))

    def starttls(self, client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call | None:
        return self._step(client, "starttls", args, kwargs, None, expect=(220,))

    def login(self, client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call | None:
        return self._step(client, "login", args, kwargs, None, expect=(235, 503))

    def _step(
        self,
        client: Any,
        step: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        target: Endpoint | None,
        expect: tuple[int, ...],
    ) -> Call | None:
        key = (id(client), step)
        if not tracing_enabled() or _IN_STEP.get() == key:
            return None
        span = guarded("starting a connection span", self._start, client, step, target)
        if span is None:
            return None
        token = _IN_STEP.set(key)
        ended = _Once(span, self, client, expect, lambda: _IN_STEP.reset(token))
        return Call(
            args,
            kwargs,
            on_success=ended.success,
            on_error=ended.failure,
            context=trace.set_span_in_context(span),
        )

    def _start(self, client: Any, step: str, target: Endpoint | None) -> Span:
        protocol = self.dialect.protocol_name(client)
        endpoint = target if target is not None else self.dialect.endpoint(client)
        initial: dict[str, str | int] = {attrs.NETWORK_PROTOCOL_NAME: protocol}
        for key, value in endpoint.attributes().items():
            if isinstance(value, (str, int)):
                initial[key] = value
        return self.settings.tracer.start_span(
            f"{protocol} {step}", kind=SpanKind.CLIENT, attributes=initial
        )


class _Once:
    """Ends a connection span once, from the call's result or its exception."""

    def __init__(
        self,
        span: Span,
        handlers: ConnectionHandlers,
        client: Any,
        expect: tuple[int, ...],
        release: Callable[[], None],
    ) -> None:
        self.span = span
        self.handlers = handlers
        self.client = client
        self.expect = expect
        self.release = release

    def success(self, result: Any) -> None:
        try:
            self._set_endpoint()
            reply = self.handlers.dialect.reply_from_result(result)
            if reply is not None:
                self._set_reply(reply)
                if reply.code not in self.expect and not reply.is_positive_completion:
                    self._fail(str(reply.code), reply.text)
        finally:
            self._end()

    def failure(self, exception: BaseException) -> None:
        try:
            self._set_endpoint()
            reply = self.handlers.dialect.reply_from_exception(exception)
            if reply is not None:
                self._set_reply(reply)
                self._fail(str(reply.code), reply.text)
            else:
                self._fail(attrs.error_type_of(exception), str(exception))
        finally:
            self._end()

    def _set_endpoint(self) -> None:
        endpoint = guarded(
            "reading the connection's addresses", self.handlers.dialect.endpoint, self.client
        )
        if endpoint is None:
            return
        for key, value in endpoint.attributes().items():
            if key in (
                attrs.NETWORK_PEER_ADDRESS,
                attrs.NETWORK_PEER_PORT,
                attrs.NETWORK_TRANSPORT,
            ):
                self.span.set_attribute(key, value)

    def _set_reply(self, reply: Reply) -> None:
        capture = self.handlers.settings.capture_addresses
        self.span.set_attributes(attrs.reply_attributes(reply, capture))

    def _fail(self, error_type: str, description: str) -> None:
        self.span.set_attribute(attrs.ERROR_TYPE, error_type)
        text = attrs.redact_addresses(description)
        self.span.set_status(Status(StatusCode.ERROR, f"{error_type}: {text}"[:512]))

    def _end(self) -> None:
        self.span.end()
        self.release()
