"""State of one MTA connection and of the message in progress on it."""

from __future__ import annotations

from dataclasses import dataclass, field

from .trace_headers import TraceContextResult

# Macro definitions that arrive with these commands describe the SMTP session (CONNECT,
# HELO, and unknown commands outside a transaction) and survive ABORT. All the others
# describe the current message and are cleared by ABORT.
_CONNECTION_MACRO_COMMANDS = frozenset({b"C", b"H"})


class MacroTable:
    """Macro values by name; message macros shadow connection macros of the same name."""

    __slots__ = ("_connection", "_mail_macros", "_message")

    def __init__(self) -> None:
        self._connection: dict[str, str] = {}
        self._message: dict[str, str] = {}
        # The macros of a MAIL command that has not arrived yet. They belong to the new
        # transaction, while the previous one may still need its own macros.
        self._mail_macros: dict[str, str] = {}

    def define(self, command: bytes, macros: dict[str, str]) -> None:
        """Store the macros that the MTA sent for ``command``."""
        if command in _CONNECTION_MACRO_COMMANDS:
            self._connection.update(macros)
        elif command == b"M":
            self._mail_macros.update(macros)
        else:
            self._message.update(macros)

    def start_transaction(self) -> None:
        """Replace the message macros with those sent for this MAIL command."""
        self._message, self._mail_macros = self._mail_macros, {}

    def get(self, name: str) -> str | None:
        """Return the value of macro ``name``, written with or without braces."""
        value = self._message.get(name)
        if value is None:
            value = self._connection.get(name)
        if value is None and len(name) > 1 and not name.startswith("{"):
            return self.get("{" + name + "}")
        return value

    def clear_message(self) -> None:
        """Forget the macros of the current message, as ABORT requires."""
        self._message.clear()


@dataclass
class StageEvent:
    """One SMTP stage of a message, with its time in nanoseconds since the epoch."""

    name: str
    time_ns: int
    attributes: dict[str, str | int] = field(default_factory=dict)


@dataclass
class ConnectionState:
    """The SMTP session that the MTA describes on one milter connection."""

    client_address: str | None = None
    client_port: int | None = None
    client_hostname: str | None = None
    helo: str | None = None
    connect_time_ns: int | None = None
    helo_time_ns: int | None = None
    macros: MacroTable = field(default_factory=MacroTable)


@dataclass
class MessageState:
    """One mail transaction, from MAIL FROM to end of message or ABORT."""

    mail_time_ns: int
    sender: str
    recipients: list[str] = field(default_factory=list)
    stages: list[StageEvent] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)
    # Bytes of the message as the client sent it, counted from header fields and body
    # chunks: each field as "name:value" plus CRLF, the blank line, and the body.
    size: int = 0
    data_started: bool = False
    queue_id: str | None = None
    # The trace context read from the headers at END_OF_HEADERS, if nothing has changed
    # them since.
    trace_context: TraceContextResult | None = None
