"""Decoding of the data of each MTA command into its event, for the sans-IO codec.

Each parser takes the bytes after the command code and returns the event or raises
:class:`ProtocolError`. The codec looks them up by the command's code byte, so that a frame
costs one dictionary look-up instead of a chain of comparisons.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from . import events
from .protocol import Command

_UINT16 = struct.Struct(">H")


class ProtocolError(Exception):
    """The MTA sent bytes that break the protocol. The connection cannot go on."""


def decode_strings(data: bytes, command: Command) -> list[str]:
    """Decode NUL-terminated strings as UTF-8, keeping invalid bytes as surrogates.

    Decoding first and splitting afterwards gives the same strings as splitting the bytes
    first: a NUL byte is valid UTF-8 on its own, so no invalid sequence includes one, and
    no surrogate that ``surrogateescape`` produces is U+0000.
    """
    if not data.endswith(b"\0"):
        raise ProtocolError(f"{command.name} data does not end with a NUL byte")
    return data[:-1].decode("utf-8", "surrogateescape").split("\0")


def _parse_macros(data: bytes) -> events.MacroDefinition:
    if not data:
        raise ProtocolError("MACRO has no command code")
    command_code = data[:1]
    if len(data) == 1:
        return events.MacroDefinition(command_code, {})
    strings = decode_strings(data[1:], Command.MACRO)
    if len(strings) % 2:
        raise ProtocolError("MACRO has a name without a value")
    macros = dict(zip(strings[0::2], strings[1::2], strict=True))
    return events.MacroDefinition(command_code, macros)


def _parse_connect(data: bytes) -> events.Connect:
    hostname_end = data.find(b"\0")
    if hostname_end < 0 or hostname_end + 1 >= len(data):
        raise ProtocolError("CONNECT has no host name or no address family")
    hostname = data[:hostname_end].decode("utf-8", "surrogateescape")
    family = chr(data[hostname_end + 1])
    rest = data[hostname_end + 2 :]
    if family == "U":
        return events.Connect(hostname, family, None, None)
    if family not in "46L" or len(rest) < _UINT16.size + 1:
        raise ProtocolError(f"CONNECT has an invalid address for family {family!r}")
    (port,) = _UINT16.unpack_from(rest)
    (address, *_) = decode_strings(rest[_UINT16.size :], Command.CONNECT)
    return events.Connect(hostname, family, port, address)


def _parse_helo(data: bytes) -> events.Helo:
    return events.Helo(decode_strings(data, Command.HELO)[0])


def _parse_mail(data: bytes) -> events.MailFrom:
    address, *parameters = decode_strings(data, Command.MAIL)
    return events.MailFrom(address, tuple(parameters))


def _parse_rcpt(data: bytes) -> events.RcptTo:
    address, *parameters = decode_strings(data, Command.RCPT)
    return events.RcptTo(address, tuple(parameters))


def _parse_header(data: bytes) -> events.Header:
    strings = decode_strings(data, Command.HEADER)
    if len(strings) != 2:
        noun = "string" if len(strings) == 1 else "strings"
        raise ProtocolError(f"HEADER has {len(strings)} {noun} instead of 2")
    return events.Header(strings[0], strings[1])


def _parse_unknown(data: bytes) -> events.UnknownCommand:
    return events.UnknownCommand(decode_strings(data, Command.UNKNOWN)[0])


def _constant(event: events.Event) -> Callable[[bytes], events.Event]:
    # Commands without fields always decode to the same event object, and any data they
    # carry is ignored.
    return lambda data: event


Parser = Callable[[bytes], events.Event]

# The parser of every command except OPTION_NEGOTIATION, which the codec decodes itself
# because it changes the codec's state.
PARSERS: dict[Command, Parser] = {
    Command.MACRO: _parse_macros,
    Command.CONNECT: _parse_connect,
    Command.HELO: _parse_helo,
    Command.MAIL: _parse_mail,
    Command.RCPT: _parse_rcpt,
    Command.HEADER: _parse_header,
    Command.BODY: events.BodyChunk,
    Command.END_OF_MESSAGE: events.EndOfMessage,
    Command.UNKNOWN: _parse_unknown,
    Command.DATA: _constant(events.Data()),
    Command.END_OF_HEADERS: _constant(events.EndOfHeaders()),
    Command.ABORT: _constant(events.Abort()),
    Command.QUIT: _constant(events.Quit()),
    Command.QUIT_NEW_CONNECTION: _constant(events.QuitNewConnection()),
}
