"""One traced mail transaction: the span, the inserted headers and the recorded replies.

This module does not depend on smtplib or aiosmtplib. The adapters describe a client
library with a :class:`Dialect` and report each reply to the :class:`Transaction`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from opentelemetry_instrumentation_smtp import attributes as attrs
from opentelemetry_instrumentation_smtp import headers
from opentelemetry_instrumentation_smtp._diagnostics import guarded, report
from opentelemetry_instrumentation_smtp.attributes import Reply
from opentelemetry_instrumentation_smtp.settings import Settings

AttributeValue = str | int | bool | Sequence[str]
Payload = TypeVar("Payload", str, bytes)

_TRACEPARENT_PARSER = TraceContextTextMapPropagator()


@dataclass(frozen=True)
class Endpoint:
    """The addresses of a client's connection, as far as the socket reveals them."""

    server_address: str | None = None
    server_port: int | None = None
    peer_address: str | None = None
    peer_port: int | None = None
    transport: str | None = None

    def attributes(self) -> dict[str, AttributeValue]:
        values: dict[str, AttributeValue] = {}
        if self.server_address:
            values[attrs.SERVER_ADDRESS] = self.server_address
        if self.server_port is not None:
            values[attrs.SERVER_PORT] = self.server_port
        if self.peer_address:
            values[attrs.NETWORK_PEER_ADDRESS] = self.peer_address
        if self.peer_port is not None:
            values[attrs.NETWORK_PEER_PORT] = self.peer_port
        if self.transport:
            values[attrs.NETWORK_TRANSPORT] = self.transport
        return values


class Dialect(Protocol):
    """The facts about one client library that the core depends on."""

    # Whether the SIZE= that the library's sendmail() declares is the exact number of
    # bytes it sends in DATA, so that smtp.message.size can reuse it.
    exact_size_option: bool

    def protocol_name(self, client: Any) -> str:
        """Return ``smtp`` or ``lmtp``."""

    def endpoint(self, client: Any) -> Endpoint: ...

    def reply_from_result(self, result: Any) -> Reply | None:
        """Return the reply carried by a ``mail``/``rcpt``/``data`` return value."""

    def reply_from_exception(self, exception: BaseException) -> Reply | None:
        """Return the server reply carried by an exception, if it carries one."""

    def payload_size(self, payload: str | bytes) -> int:
        """Return the number of bytes the library transmits for ``payload`` in DATA."""


def link_to_traceparent(value: str | None) -> list[Link]:
    """Return a link to the context in a traceparent header value, if it is valid."""
    if not value or not headers.is_valid_traceparent(value):
        return []
    context = _TRACEPARENT_PARSER.extract({headers.TRACEPARENT: value.strip()})
    span_context = trace.get_current_span(context).get_span_context()
    return [Link(span_context)] if span_context.is_valid else []


class Transaction:
    """The state of one message being sent, from its first call to its final reply."""

    def __init__(
        self,
        settings: Settings,
        dialect: Dialect,
        client: Any,
        owner: str,
        links: list[Link],
    ) -> None:
        self.settings = settings
        self.dialect = dialect
        self.client = client
        # The entry point that started the transaction: "sendmail", "send_message" or
        # "mail" (a hand-driven mail/rcpt/data sequence).
        self.owner = owner
        self.payload_prepared = False
        # Wrapped calls of this transaction that are running now. A close() that arrives
        # meanwhile from a callback (aiosmtplib's connection_lost) must not end the
        # transaction before the running call records its own failure.
        self.calls_in_flight = 0
        self.ended = False
        self.recipients = 0
        self.rejected = 0
        self.final_reply: Reply | None = None
        self.message_size: int | None = None
        # The SIZE= that the library itself put on MAIL FROM, when it did.
        self.declared_size: int | None = None
        self._inserted_length = 0
        self._attributes: dict[str, AttributeValue] = {}
        self._pending: dict[str, AttributeValue] = {}
        self._start = time.perf_counter()

        protocol = dialect.protocol_name(client)
        initial: dict[str, AttributeValue] = {
            attrs.MESSAGING_SYSTEM: attrs.MESSAGING_SYSTEM_SMTP,
            attrs.MESSAGING_OPERATION_NAME: "send",
            attrs.MESSAGING_OPERATION_TYPE: "send",
            attrs.NETWORK_PROTOCOL_NAME: protocol,
            attrs.SMTP_TRACE_CONTEXT_INJECTED: False,
        }
        endpoint = guarded("reading the connection's addresses", dialect.endpoint, client)
        if endpoint is not None:
            initial.update(endpoint.attributes())
        self.span: Span = settings.tracer.start_span(
            f"{protocol} send", kind=SpanKind.CLIENT, attributes=initial, links=links
        )
        self._attributes.update(initial)
        self.context: Context = trace.set_span_in_context(self.span)

    # -- attributes ---------------------------------------------------------------

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        # Attributes are handed to the span in one batch (see _flush), because each
        # separate SDK call takes the span's lock and validates again.
        self._attributes[key] = value
        self._pending[key] = value

    def _flush(self) -> None:
        if self._pending:
            self.span.set_attributes(self._pending)
            self._pending = {}

    def set_envelope(self, sender: str | None, recipients: Sequence[str] | str | None) -> None:
        if not self.settings.capture_addresses:
            return
        if sender is not None:
            self.set_attribute(attrs.SMTP_ENVELOPE_FROM, str(sender))
        # Only sequences are read: iterating a generator here would use it up before the
        # library sends RCPT.
        if isinstance(recipients, str):
            self.set_attribute(attrs.SMTP_ENVELOPE_TO, [recipients])
        elif isinstance(recipients, (list, tuple)):
            self.set_attribute(attrs.SMTP_ENVELOPE_TO, [str(r) for r in recipients])

    def run_request_hook(
        self, sender: str | None, recipients: Sequence[str] | str | None, message: Any
    ) -> None:
        hook = self.settings.request_hook
        if hook is None or not self.span.is_recording():
            return
        self._flush()
        envelope_to = [recipients] if isinstance(recipients, str) else recipients
        guarded("request_hook", hook, self.span, self.client, sender, envelope_to, message)

    # -- the message --------------------------------------------------------------

    def header_lines(self) -> list[str]:
        """Return the header lines for this span, or none when propagation is off."""
        if not self.settings.propagate:
            return []
        carrier: dict[str, str] = {}
        self.settings.propagator.inject(carrier, context=self.context)
        lines, rejected = headers.format_fields(carrier)
        if rejected:
            report(f"propagator field(s) {sorted(rejected)} not writable as a header line")
        return lines

    def prepare_payload(
        self, payload: Payload, summary: headers.HeaderSummary | None = None
    ) -> Payload:
        """Return ``payload`` with the trace context lines inserted, when that is safe.

        ``summary`` is ``headers.summarize(payload)`` when the caller has it already.
        """
        self.payload_prepared = True
        if not isinstance(payload, (str, bytes)):
            return payload
        if summary is None:
            summary = headers.summarize(payload)
        if summary.message_id:
            self.set_attribute(attrs.MESSAGING_MESSAGE_ID, summary.message_id)
        if summary.traceparent is not None:
            # The message already carries the context it was created in. It is kept, and
            # the send span links to it when the span did not know it at its start.
            if self.owner == "mail":
                for link in link_to_traceparent(summary.traceparent):
                    self.span.add_link(link.context)
            return payload
        if not summary.can_insert or summary.has_tracestate:
            # A tracestate without a traceparent belongs to some other trace, and a
            # traceparent put above it would be read together with it.
            return payload
        if isinstance(payload, str) and not payload.isascii():
            # smtplib and aiosmtplib encode str payloads as ASCII and raise
            # UnicodeEncodeError; the caller must get the same error for the same text.
            return payload
        lines = self.header_lines()
        if not lines:
            return payload
        self._inserted_length = headers.header_length(lines, summary.line_ending)
        self.set_attribute(attrs.SMTP_TRACE_CONTEXT_INJECTED, True)
        return headers.insert_lines(payload, lines, summary.line_ending)

    def expected_insert_length(self) -> int:
        """Estimate the bytes that will be inserted, before the payload is known."""
        lines = self.header_lines()
        return headers.header_length(lines) if lines else 0

    # -- replies ------------------------------------------------------------------

    def on_mail_reply(self, reply: Reply | None) -> None:
        if reply is not None and not reply.is_positive_completion:
            self.final_reply = reply

    def on_rcpt_reply(self, recipient: str | None, reply: Reply | None) -> None:
        self.recipients += 1
        self.set_attribute(attrs.SMTP_RECIPIENTS_COUNT, self.recipients)
        accepted = reply is not None and reply.is_positive_completion
        server_address = self._attributes.get(attrs.SERVER_ADDRESS)
        self.settings.metrics.record_recipient(
            accepted,
            reply.code if reply else None,
            server_address if isinstance(server_address, str) else None,
            self.context,
        )
        if accepted:
            return
        self.rejected += 1
        self.set_attribute(attrs.SMTP_RECIPIENTS_REJECTED_COUNT, self.rejected)
        event: dict[str, AttributeValue] = {}
        if reply is not None:
            self.final_reply = reply
            event.update(attrs.reply_attributes(reply, self.settings.capture_addresses))
        if self.settings.capture_addresses and recipient is not None:
            event[attrs.SMTP_RECIPIENT_ADDRESS] = str(recipient)
        self.span.add_event(attrs.EVENT_RECIPIENT_REFUSED, event)

    def on_data_reply(self, reply: Reply | None, payload: str | bytes | None) -> None:
        if payload is not None:
            exact = self.dialect.exact_size_option and self.owner != "mail"
            if exact and self.declared_size is not None:
                self.message_size = self.declared_size
            else:
                self.message_size = self.dialect.payload_size(payload)
            self.set_attribute(attrs.SMTP_MESSAGE_SIZE, self.message_size)
            self.settings.metrics.record_size(self.message_size, self._attributes, self.context)
        if reply is not None:
            self.final_reply = reply

    # -- the end ------------------------------------------------------------------

    def end(self, result: Any = None, exception: BaseException | None = None) -> None:
        """End the span once: with the outcome of the owning call, or of the last step."""
        if self.ended:
            return
        self.ended = True
        try:
            self._finish_attributes(exception)
            self._flush()
            hook = self.settings.response_hook
            if hook is not None and self.span.is_recording():
                outcome = exception if exception is not None else result
                guarded("response_hook", hook, self.span, self.client, outcome)
            duration = time.perf_counter() - self._start
            self.settings.metrics.record_send(duration, self._attributes, self.context)
        finally:
            self._flush()
            self.span.end()

    def end_uninstrumented(self) -> None:
        """End the span because the instrumentation was removed in mid-transaction."""
        if not self.ended:
            self.span.add_event("smtp.uninstrumented")
            self.end()

    def abort(self, reason: str = attrs.ERROR_TRANSACTION_ABORTED) -> None:
        """End a hand-driven transaction that stopped before the server took the message."""
        if self.ended:
            return
        refused = self.final_reply is not None and not self.final_reply.is_positive_completion
        if not refused:
            # After a refusal, end() reports the refusing reply code instead.
            self._set_error(reason, "the transaction ended before the message was accepted")
        self.end()

    def _finish_attributes(self, exception: BaseException | None) -> None:
        reply = self.final_reply
        if exception is not None:
            exception_reply = self.dialect.reply_from_exception(exception)
            if exception_reply is not None:
                reply = exception_reply
        if reply is not None:
            for key, value in attrs.reply_attributes(
                reply, self.settings.capture_addresses
            ).items():
                self.set_attribute(key, value)
            queue_id = reply.queue_id if reply.is_positive_completion else None
            if queue_id:
                self.set_attribute(attrs.SMTP_QUEUE_ID, queue_id)

        if exception is not None:
            refused_by_server = reply is not None and not reply.is_positive_completion
            error_type = str(reply.code) if refused_by_server and reply else None
            description = attrs.redact_addresses(str(exception))
            self._set_error(error_type or attrs.error_type_of(exception), description)
            self.span.add_event(
                "exception",
                {
                    "exception.type": attrs.error_type_of(exception),
                    "exception.message": description,
                },
            )
        elif reply is not None and not reply.is_positive_completion:
            # A hand-driven DATA whose reply was a refusal, without an exception.
            self._set_error(str(reply.code), attrs.redact_addresses(reply.text))

    def _set_error(self, error_type: str, description: str) -> None:
        self.set_attribute(attrs.ERROR_TYPE, error_type)
        self.span.set_status(Status(StatusCode.ERROR, f"{error_type}: {description}"[:512]))
