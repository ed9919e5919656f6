"""One MTA connection: decoded events in, telemetry and reply bytes out.

The session sits between the codec and the server. It keeps the connection's state, the
message in progress and the macros, and it is still free of sockets and asyncio, so tests
and benchmarks can feed it bytes directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from . import events
from .codec import MilterCodec
from .config import MilterConfig
from .policy import PolicyAction, decide, header_changes
from .protocol import Action, MacroStage, ProtocolFlag
from .state import ConnectionState, MessageState, StageEvent
from .trace_headers import extract_trace_context
from .tracing import ERROR_ABORTED, MilterTelemetry, printable

# The milter only observes, so it requests that the MTA skip the stages it does not use,
# and it sends no reply where the MTA allows that. END_OF_MESSAGE always gets a reply.
REQUESTED_PROTOCOL = (
    ProtocolFlag.NO_UNKNOWN
    | ProtocolFlag.NO_REPLY_CONNECT
    | ProtocolFlag.NO_REPLY_HELO
    | ProtocolFlag.NO_REPLY_MAIL
    | ProtocolFlag.NO_REPLY_RCPT
    | ProtocolFlag.NO_REPLY_DATA
    | ProtocolFlag.NO_REPLY_HEADER
    | ProtocolFlag.NO_REPLY_END_OF_HEADERS
    | ProtocolFlag.NO_REPLY_BODY
    | ProtocolFlag.NO_REPLY_UNKNOWN
    | ProtocolFlag.HEADER_LEADING_SPACE
)

# Postfix replaces its default macro list of a stage with the list requested here. The
# queue id ``i`` is requested at every stage from MAIL on, because Postfix assigns it only
# after the first accepted recipient.
MACRO_REQUESTS: dict[MacroStage, tuple[str, ...]] = {
    MacroStage.CONNECT: ("j", "v", "{daemon_name}", "{client_addr}", "{client_port}"),
    MacroStage.HELO: ("{tls_version}",),
    MacroStage.MAIL: ("i",),
    MacroStage.RCPT: ("i",),
    MacroStage.DATA: ("i",),
    MacroStage.END_OF_HEADERS: ("i",),
    MacroStage.END_OF_MESSAGE: ("i",),
}

_RECIPIENT_ADDRESS = "smtp.recipient.address"

_ACTION_NEEDED = {
    PolicyAction.NONE: Action.NONE,
    PolicyAction.INSERTED: Action.ADD_HEADERS,
    PolicyAction.REWRITTEN: Action.CHANGE_HEADERS,
    PolicyAction.STRIPPED: Action.CHANGE_HEADERS,
}


def _byte_length(value: str) -> int:
    length = len(value) if value.isascii() else len(value.encode("utf-8", "surrogateescape"))
    # A line break inside a folded value stands for CRLF in the message.
    return length + value.count("\n") - value.count("\r\n")


class MilterSession:
    """The milter's side of one MTA connection.

    :meth:`receive_data` takes bytes from the MTA and returns the bytes to send back. It
    raises :class:`~.codec.ProtocolError` when the MTA breaks the protocol, after which
    the caller closes the connection and calls :meth:`connection_lost`.
    """

    def __init__(self, config: MilterConfig, telemetry: MilterTelemetry) -> None:
        self._config = config
        self._telemetry = telemetry

        actions = Action.NONE
        policy = config.policy
        if policy.inject_traceparent:
            actions |= Action.ADD_HEADERS
        if policy.rewrite_traceparent or policy.strip_external:
            actions |= Action.CHANGE_HEADERS
        self.codec = MilterCodec(
            protocol=REQUESTED_PROTOCOL,
            actions=actions,
            macro_requests=MACRO_REQUESTS,
            max_frame_size=config.max_frame_size,
        )

        self.connection = ConnectionState()
        self.message: MessageState | None = None
        self.closed = False
        # True when header values arrive with the space after the colon, as negotiated.
        self._leading_space = False

        # One handler per event class, looked up by type. When a handler returns None,
        # the negotiated no-reply flags decide whether CONTINUE is sent.
        self._handlers: dict[type[events.Event], Callable[[Any, int], bytes | None]] = {
            events.MacroDefinition: self._on_macros,
            events.Header: self._on_header,
            events.BodyChunk: self._on_body,
            events.RcptTo: self._on_rcpt,
            events.MailFrom: self._on_mail,
            events.Data: self._on_data,
            events.EndOfHeaders: self._on_end_of_headers,
            events.EndOfMessage: self._end_of_message,
            events.Abort: self._on_abort,
            events.Connect: self._connect,
            events.Helo: self._on_helo,
            events.OptionNegotiation: self._on_negotiation,
            events.Quit: self._on_quit,
            events.QuitNewConnection: self._on_quit,
        }

    @property
    def in_message(self) -> bool:
        """True from MAIL FROM until the message ends."""
        return self.message is not None

    def receive_data(self, data: bytes) -> bytes:
        """Handle bytes from the MTA and return the reply bytes, possibly empty."""
        replies = b""
        codec = self.codec
        codec.feed(data)
        # Events are handled one by one, so that those before a bad frame still count.
        for event in codec.buffered_events():
            reply = self._handle(event)
            if reply:
                replies += reply
        return replies

    def connection_lost(self, error_type: str) -> None:
        """Record the message in progress, if any, as ended early with ``error_type``."""
        if self.message is not None:
            self._finish(time.time_ns(), error_type)
        self.closed = True

    def _handle(self, event: events.Event) -> bytes:
        handler = self._handlers.get(type(event))
        if handler is not None:
            reply = handler(event, time.time_ns())
            if reply is not None:
                return reply
        # UnknownCommand needs no bookkeeping. A stage gets CONTINUE only when the MTA
        # did not offer its no-reply flag.
        if self.codec.needs_reply(event):
            return self.codec.continue_()
        return b""

    def _on_macros(self, event: events.MacroDefinition, now: int) -> None:
        self.connection.macros.define(event.command, event.macros)

    def _on_header(self, event: events.Header, now: int) -> None:
        message = self.message
        if message is not None:
            message.headers.append((event.name, event.value))
            # A header field after END_OF_HEADERS breaks the protocol, but if one comes,
            # the trace context is read again at end of message.
            message.trace_context = None
            size = _byte_length(event.name) + _byte_length(event.value) + 3
            if not self._leading_space:
                # The MTA removed the space after the colon; count it back in.
                size += 1
            message.size += size

    def _on_body(self, event: events.BodyChunk, now: int) -> None:
        if self.message is not None:
            self.message.size += len(event.data)

    def _on_rcpt(self, event: events.RcptTo, now: int) -> None:
        message = self.message
        if message is not None:
            message.recipients.append(event.address)
            self._stage(message, "smtp.rcpt", now, event.address)

    def _on_mail(self, event: events.MailFrom, now: int) -> None:
        if self.message is not None:
            # A new MAIL without ABORT: the MTA dropped the previous transaction.
            self._finish(now, ERROR_ABORTED)
        # The previous transaction's macros (its queue id) must not reach this one.
        self.connection.macros.start_transaction()
        self.message = message = MessageState(now, event.address)
        self._stage(message, "smtp.mail", now, None)

    def _on_data(self, event: events.Data, now: int) -> None:
        message = self.message
        if message is not None:
            message.data_started = True
            self._stage(message, "smtp.data", now, None)

    def _on_end_of_headers(self, event: events.EndOfHeaders, now: int) -> None:
        message = self.message
        if message is not None:
            # The blank line that ends the header section.
            message.size += 2
            self._stage(message, "smtp.end_of_headers", now, None)
            # The MTA sends the body next without waiting, so reading the trace context
            # now takes it off the path to the reply at end of message.
            message.trace_context = extract_trace_context(message.headers)

    def _on_abort(self, event: events.Abort, now: int) -> None:
        if self.message is not None:
            self._finish(now, ERROR_ABORTED)
        self.connection.macros.clear_message()

    def _on_helo(self, event: events.Helo, now: int) -> None:
        self.connection.helo = event.name
        self.connection.helo_time_ns = now

    def _on_negotiation(self, event: events.OptionNegotiation, now: int) -> bytes:
        reply = self.codec.negotiation_reply()
        self._leading_space = bool(self.codec.protocol & ProtocolFlag.HEADER_LEADING_SPACE)
        return reply

    def _on_quit(self, event: events.Quit | events.QuitNewConnection, now: int) -> None:
        if self.message is not None:
            self._finish(now, ERROR_ABORTED)
        if isinstance(event, events.Quit):
            self.closed = True
        else:
            self.connection = ConnectionState()

    def _connect(self, event: events.Connect, now: int) -> None:
        connection = self.connection
        connection.connect_time_ns = now
        connection.client_hostname = event.hostname
        if event.family in ("4", "6"):
            connection.client_address = event.address
            connection.client_port = event.port or None
        elif event.family == "L":
            connection.client_address = event.address

    def _stage(self, message: MessageState, name: str, now: int, address: str | None) -> None:
        if address is not None and self._config.record_addresses:
            attributes: dict[str, str | int] = {_RECIPIENT_ADDRESS: printable(address)}
            message.stages.append(StageEvent(name, now, attributes))
        else:
            message.stages.append(StageEvent(name, now))

    def _end_of_message(self, event: events.EndOfMessage, now: int) -> bytes:
        message = self.message
        if message is None:
            # END_OF_MESSAGE without MAIL: nothing to record, but the MTA waits.
            return self.codec.continue_()
        message.size += len(event.data)
        self._stage(message, "smtp.end_of_message", now, None)
        message.queue_id = self.connection.macros.get("i")

        trace_context = message.trace_context or extract_trace_context(message.headers)
        action = decide(
            self._config.policy, message.headers, message.recipients, trace_context.status
        )
        if not self.codec.actions & _ACTION_NEEDED[action]:
            # The MTA did not grant the modification, so the policy cannot apply.
            action = PolicyAction.NONE

        recorded = self._telemetry.record_message(
            self.connection, message, trace_context, action, now
        )
        self.message = None
        # ABORT follows in Postfix, but a new MAIL must never see this message's queue id.
        self.connection.macros.clear_message()

        replies = []
        if action is not PolicyAction.NONE:
            for change in header_changes(action, message.headers, recorded.span_context):
                if change.occurrence is None:
                    replies.append(self.codec.add_header(change.name, change.value))
                else:
                    replies.append(
                        self.codec.change_header(change.occurrence, change.name, change.value)
                    )
        replies.append(self.codec.continue_())
        return b"".join(replies)

    def _finish(self, now: int, error_type: str) -> None:
        """Record the message in progress as ended early, if it got as far as DATA."""
        message = self.message
        self.message = None
        if message is None or not message.data_started:
            return
        message.queue_id = self.connection.macros.get("i")
        trace_context = message.trace_context or extract_trace_context(message.headers)
        self._telemetry.record_message(
            self.connection, message, trace_context, PolicyAction.NONE, now, error_type
        )
