"""The telemetry of each message: its span, stage events, log line and metrics.

The span is created when the message ends, with its start time set to the MAIL FROM time,
because its parent is known only once the headers have been read.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from opentelemetry import metrics, trace
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode

from opentelemetry_instrumentation_smtp import attributes as attrs
from opentelemetry_instrumentation_smtp.version import __version__

from .policy import PolicyAction
from .state import ConnectionState, MessageState
from .trace_headers import MESSAGE_ID, TraceContextResult, TraceContextStatus, first_header_value

_logger = logging.getLogger(__name__)

SPAN_NAME = "smtp receive"

# Attributes that only the milter records; the shared ones are in the attributes module.
CLIENT_ADDRESS = "client.address"
CLIENT_PORT = "client.port"
SMTP_HELO = "smtp.helo"
SMTP_MTA_NAME = "smtp.mta.name"
SMTP_MTA_VERSION = "smtp.mta.version"
SMTP_TRACE_CONTEXT = "smtp.trace_context"
SMTP_MILTER_HEADER_ACTION = "smtp.milter.header_action"
OPERATION_TYPE_RECEIVE = "receive"

# error.type values of messages that did not reach end of message.
ERROR_ABORTED = "aborted"
ERROR_DISCONNECTED = "disconnected"
ERROR_TIMEOUT = "timeout"
ERROR_PROTOCOL = "protocol_error"
# The milter itself failed while handling the connection's data.
ERROR_INTERNAL = "internal_error"
# The milter aborted the connection at the shutdown deadline.
ERROR_SHUTDOWN = "shutdown"

MessageDoneCallback = Callable[[str, SpanContext], None]

# Printable ASCII other than space, '"', '=' and backslash: logfmt values that need no quotes.
_LOGFMT_BARE = re.compile(r"[!#-<>-\[\]-~]+")
_LOGFMT_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


# The metric attributes of messages that reached end of message, built once. The SDK
# only reads them.
_METRIC_ATTRIBUTES: dict[TraceContextStatus, dict[str, str]] = {
    status: {SMTP_TRACE_CONTEXT: status.value} for status in TraceContextStatus
}


@dataclass(frozen=True)
class RecordedMessage:
    """Result of recording a message: the span's context and the queue id."""

    span_context: SpanContext
    queue_id: str | None


def printable(value: str) -> str:
    """Replace undecodable bytes, kept by the codec as surrogates, with U+FFFD."""
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def logfmt_value(value: str) -> str:
    """Format ``value`` as one logfmt value, quoted unless it is plain printable ASCII.

    Inside quotes, backslash and '"' are escaped with a backslash, and line breaks and
    other characters that ``str.isprintable`` rejects become escape sequences, so a value
    can neither end its field early nor start a new log line.
    """
    if _LOGFMT_BARE.fullmatch(value):
        return value
    escaped = []
    for char in printable(value):
        if char in _LOGFMT_ESCAPES:
            escaped.append(_LOGFMT_ESCAPES[char])
        elif char.isprintable():
            escaped.append(char)
        elif ord(char) < 0x100:
            escaped.append(f"\\x{ord(char):02x}")
        elif ord(char) < 0x10000:
            escaped.append(f"\\u{ord(char):04x}")
        else:
            escaped.append(f"\\U{ord(char):08x}")
    return '"' + "".join(escaped) + '"'


def parse_port(text: str | None) -> int | None:
    """Return a TCP port from its decimal text, or ``None`` for anything else.

    ``str.isdigit`` also accepts digits such as "²" that ``int`` rejects, so the check is
    for ASCII digits.
    """
    if not text or len(text) > 5 or not text.isascii() or not text.isdigit():
        return None
    port = int(text)
    return port if 0 < port <= 65535 else None


def parse_mta_version(macro_v: str | None) -> tuple[str | None, str | None]:
    """Split the ``v`` macro: ``Postfix 3.7.11`` is a name and a version, ``8.18.1`` a version."""
    if not macro_v:
        return None, None
    parts = macro_v.split()
    if len(parts) >= 2:
        return parts[0], " ".join(parts[1:])
    return None, parts[0]


class MilterTelemetry:
    """Spans, metrics and log lines of the milter, shared by all its connections.

    ``on_message_done(queue_id, span_context)`` is called once for each message that
    reached end of message with a known queue id. An exception it raises is logged and
    otherwise ignored.
    """

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        *,
        record_addresses: bool = False,
        on_message_done: MessageDoneCallback | None = None,
    ) -> None:
        self._tracer = trace.get_tracer(__name__, __version__, tracer_provider)
        meter = metrics.get_meter(__name__, __version__, meter_provider)
        self._record_addresses = record_addresses
        self.on_message_done = on_message_done
        self._messages = meter.create_counter(
            "smtp.milter.messages",
            unit="{message}",
            description="Messages the milter saw, by whether they carried a trace context.",
        )
        self._duration = meter.create_histogram(
            "smtp.milter.message.duration",
            unit="s",
            description="Time from MAIL FROM to end of message, as the milter saw it.",
        )
        self._connections = meter.create_up_down_counter(
            "smtp.milter.connections",
            unit="{connection}",
            description="MTA connections that the milter has open.",
        )

    def connection_opened(self) -> None:
        """Count one more open MTA connection."""
        self._connections.add(1)

    def connection_closed(self) -> None:
        """Count one fewer open MTA connection."""
        self._connections.add(-1)

    def record_message(
        self,
        connection: ConnectionState,
        message: MessageState,
        trace_context: TraceContextResult,
        header_action: PolicyAction,
        end_time_ns: int,
        error_type: str | None = None,
    ) -> RecordedMessage:
        """Create and end the span of one message, then write its log line and metrics."""
        span = self._tracer.start_span(
            SPAN_NAME,
            context=trace_context.context,
            kind=SpanKind.SERVER,
            start_time=message.mail_time_ns,
            record_exception=False,
        )
        message_id = first_header_value(message.headers, MESSAGE_ID)
        queue_id = message.queue_id or connection.macros.get("i")
        if span.is_recording():
            attributes = self._span_attributes(
                connection, message, trace_context, queue_id, message_id
            )
            if header_action is not PolicyAction.NONE:
                attributes[SMTP_MILTER_HEADER_ACTION] = header_action.value
            if error_type is not None:
                attributes[attrs.ERROR_TYPE] = error_type
            # One call, because the SDK takes its lock and checks the span once per call.
            span.set_attributes(attributes)
            self._add_stage_events(span, connection, message)
            if error_type is not None:
                span.set_status(Status(StatusCode.ERROR, f"message ended early: {error_type}"))
        span.end(end_time=end_time_ns)
        span_context = span.get_span_context()

        self._log(message, span_context, queue_id, message_id, trace_context, error_type)
        if error_type is None:
            metric_attributes = _METRIC_ATTRIBUTES[trace_context.status]
        else:
            metric_attributes = {
                SMTP_TRACE_CONTEXT: trace_context.status.value,
                attrs.ERROR_TYPE: error_type,
            }
        self._messages.add(1, metric_attributes)
        self._duration.record((end_time_ns - message.mail_time_ns) / 1e9, metric_attributes)

        if error_type is None and queue_id and self.on_message_done is not None:
            try:
                self.on_message_done(queue_id, span_context)
            except Exception:
                _logger.exception("on_message_done callback failed for queue id %s", queue_id)
        return RecordedMessage(span_context, queue_id)

    def _span_attributes(
        self,
        connection: ConnectionState,
        message: MessageState,
        trace_context: TraceContextResult,
        queue_id: str | None,
        message_id: str | None,
    ) -> dict[str, str | int | list[str]]:
        macros = connection.macros
        attributes: dict[str, str | int | list[str]] = {
            attrs.MESSAGING_SYSTEM: attrs.MESSAGING_SYSTEM_SMTP,
            attrs.MESSAGING_OPERATION_TYPE: OPERATION_TYPE_RECEIVE,
            attrs.SMTP_RECIPIENTS_COUNT: len(message.recipients),
            SMTP_TRACE_CONTEXT: trace_context.status.value,
        }
        if message.data_started:
            attributes[attrs.SMTP_MESSAGE_SIZE] = message.size

        client_address = connection.client_address or macros.get("{client_addr}")
        if client_address:
            attributes[CLIENT_ADDRESS] = printable(client_address)
        client_port = connection.client_port
        if client_port is None:
            port_macro = macros.get("{client_port}")
            client_port = parse_port(port_macro)
        if client_port:
            attributes[CLIENT_PORT] = client_port

        server_address = macros.get("j")
        if server_address:
            attributes[attrs.SERVER_ADDRESS] = printable(server_address)
        mta_name, mta_version = parse_mta_version(macros.get("v"))
        if mta_name:
            attributes[SMTP_MTA_NAME] = printable(mta_name)
        if mta_version:
            attributes[SMTP_MTA_VERSION] = printable(mta_version)

        if connection.helo is not None:
            attributes[SMTP_HELO] = printable(connection.helo)
        if queue_id:
            attributes[attrs.SMTP_QUEUE_ID] = printable(queue_id)
        if message_id:
            attributes[attrs.MESSAGING_MESSAGE_ID] = printable(message_id)

        if self._record_addresses:
            attributes[attrs.SMTP_ENVELOPE_FROM] = printable(message.sender)
            attributes[attrs.SMTP_ENVELOPE_TO] = [printable(rcpt) for rcpt in message.recipients]
        return attributes

    def _add_stage_events(
        self, span: trace.Span, connection: ConnectionState, message: MessageState
    ) -> None:
        # CONNECT and HELO belong to the SMTP session, so for the second and later
        # messages of a session these events lie before the span's start.
        if connection.connect_time_ns is not None:
            span.add_event("smtp.connect", timestamp=connection.connect_time_ns)
        if connection.helo_time_ns is not None:
            span.add_event("smtp.helo", timestamp=connection.helo_time_ns)
        for stage in message.stages:
            # The SDK records an empty mapping for None as well, without copying a dict.
            span.add_event(stage.name, stage.attributes or None, timestamp=stage.time_ns)

    def _log(
        self,
        message: MessageState,
        span_context: SpanContext,
        queue_id: str | None,
        message_id: str | None,
        trace_context: TraceContextResult,
        error_type: str | None,
    ) -> None:
        if not _logger.isEnabledFor(logging.INFO):
            return
        outcome = "received" if error_type is None else f"ended early ({error_type})"
        addresses = ""
        if self._record_addresses:
            sender = logfmt_value(message.sender)
            recipients = logfmt_value(",".join(message.recipients))
            addresses = f" from={sender} to={recipients}"
        # Values from the client are quoted, so that none can pose as another field.
        _logger.info(
            "message %s: queue_id=%s trace_id=%032x span_id=%016x message_id=%s"
            " trace_context=%s recipients=%d%s",
            outcome,
            logfmt_value(queue_id) if queue_id else "-",
            span_context.trace_id,
            span_context.span_id,
            logfmt_value(message_id) if message_id else "-",
            trace_context.status.value,
            len(message.recipients),
            addresses,
        )
