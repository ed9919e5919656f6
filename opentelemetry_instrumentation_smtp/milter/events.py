"""Events that the codec decodes from the MTA's commands, one class per command.

The classes are slotted and not frozen, because frozen dataclasses are slower to create
and the milter creates about twenty events per message.

Strings are decoded as UTF-8 with ``surrogateescape``, so that bytes that are not UTF-8
survive a round trip through the codec's reply encoders unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeAlias

from .protocol import Action, Command, ProtocolFlag


@dataclass(slots=True)
class OptionNegotiation:
    """The MTA's offer: its protocol version, the actions and the protocol flags it allows."""

    version: int
    actions: Action
    protocol: ProtocolFlag


@dataclass(slots=True)
class MacroDefinition:
    """Macro values that apply to the command that follows, keyed by the macro's name.

    Names are as the MTA sends them: one letter (``i``) or in braces (``{client_addr}``).
    """

    command: bytes
    macros: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Connect:
    """The SMTP client's connection: host name, address family, port and address.

    ``family`` is ``4``, ``6``, ``L`` (Unix socket) or ``U`` (unknown). An unknown family
    has neither port nor address.
    """

    hostname: str
    family: str
    port: int | None
    address: str | None


@dataclass(slots=True)
class Helo:
    """The name the client gave in HELO or EHLO."""

    name: str


@dataclass(slots=True)
class MailFrom:
    """The envelope sender as the client wrote it, usually in angle brackets, and its
    ESMTP parameters."""

    address: str
    parameters: tuple[str, ...]


@dataclass(slots=True)
class RcptTo:
    """One envelope recipient as the client wrote it, and its ESMTP parameters."""

    address: str
    parameters: tuple[str, ...]


@dataclass(slots=True)
class Data:
    """The client sent DATA."""


@dataclass(slots=True)
class Header:
    """One header field. ``value`` is as the MTA sent it: folded, and with the space after
    the colon only when the leading-space flag was negotiated."""

    name: str
    value: str


@dataclass(slots=True)
class EndOfHeaders:
    """The blank line after the header section."""


@dataclass(slots=True)
class BodyChunk:
    """One chunk of the message body, with CRLF line endings."""

    data: bytes


@dataclass(slots=True)
class EndOfMessage:
    """The end of the message. The MTA waits for the reply and any modifications."""

    data: bytes


@dataclass(slots=True)
class Abort:
    """The current message ended before or after end of message; connection state stays."""


@dataclass(slots=True)
class Quit:
    """The MTA closes the milter session."""


@dataclass(slots=True)
class QuitNewConnection:
    """The MTA ends this SMTP session and starts a new one on the same milter connection."""


@dataclass(slots=True)
class UnknownCommand:
    """An SMTP command that the MTA did not recognise, as the client sent it."""

    line: str


Event: TypeAlias = (
    OptionNegotiation
    | MacroDefinition
    | Connect
    | Helo
    | MailFrom
    | RcptTo
    | Data
    | Header
    | EndOfHeaders
    | BodyChunk
    | EndOfMessage
    | Abort
    | Quit
    | QuitNewConnection
    | UnknownCommand
)

# The command that carries each event class, used to look up its no-reply flag.
COMMAND_OF_EVENT: dict[type[Event], Command] = {
    OptionNegotiation: Command.OPTION_NEGOTIATION,
    MacroDefinition: Command.MACRO,
    Connect: Command.CONNECT,
    Helo: Command.HELO,
    MailFrom: Command.MAIL,
    RcptTo: Command.RCPT,
    Data: Command.DATA,
    Header: Command.HEADER,
    EndOfHeaders: Command.END_OF_HEADERS,
    BodyChunk: Command.BODY,
    EndOfMessage: Command.END_OF_MESSAGE,
    Abort: Command.ABORT,
    Quit: Command.QUIT,
    QuitNewConnection: Command.QUIT_NEW_CONNECTION,
    UnknownCommand: Command.UNKNOWN,
}
