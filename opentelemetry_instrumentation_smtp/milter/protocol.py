"""Constants of the milter protocol, version 6, as Sendmail 8.14+ and Postfix 2.6+ speak it.

The values come from Sendmail's ``include/libmilter/mfdef.h`` and ``mfapi.h``; the protocol
has no RFC. Every frame is a 4-byte big-endian length, then a 1-byte command or reply code,
then ``length - 1`` bytes of data.
"""

from __future__ import annotations

import enum

PROTOCOL_VERSION = 6

# The length prefix is 4 bytes, and the length counts the code byte and the data.
LENGTH_PREFIX_SIZE = 4

# libmilter's largest body chunk and its default limit on a command's data size. Postfix
# sends body chunks of at most this size, but a single header can be larger (Postfix's
# header_size_limit defaults to 102400 bytes), so the codec's default limit is higher.
MILTER_CHUNK_SIZE = 65535
DEFAULT_MAX_FRAME_SIZE = 1024 * 1024


class Command(bytes, enum.Enum):
    """Codes of the commands that the MTA sends to the milter (``SMFIC_*``)."""

    ABORT = b"A"
    BODY = b"B"
    CONNECT = b"C"
    MACRO = b"D"
    END_OF_MESSAGE = b"E"
    HELO = b"H"
    QUIT_NEW_CONNECTION = b"K"
    HEADER = b"L"
    MAIL = b"M"
    END_OF_HEADERS = b"N"
    OPTION_NEGOTIATION = b"O"
    QUIT = b"Q"
    RCPT = b"R"
    DATA = b"T"
    UNKNOWN = b"U"


class Reply(bytes, enum.Enum):
    """Codes of the replies and modification actions that the milter sends (``SMFIR_*``)."""

    ADD_RECIPIENT = b"+"
    DELETE_RECIPIENT = b"-"
    ADD_RECIPIENT_WITH_ARGS = b"2"
    SHUTDOWN = b"4"
    ACCEPT = b"a"
    REPLACE_BODY = b"b"
    CONTINUE = b"c"
    DISCARD = b"d"
    CHANGE_FROM = b"e"
    CONNECTION_FAIL = b"f"
    ADD_HEADER = b"h"
    INSERT_HEADER = b"i"
    SET_SYMBOL_LIST = b"l"
    CHANGE_HEADER = b"m"
    PROGRESS = b"p"
    QUARANTINE = b"q"
    REJECT = b"r"
    SKIP = b"s"
    TEMPFAIL = b"t"
    REPLY_CODE = b"y"


class Action(enum.IntFlag):
    """Modifications the milter may make to a message (``SMFIF_*``), negotiated at start."""

    NONE = 0
    ADD_HEADERS = 0x001
    CHANGE_BODY = 0x002
    ADD_RECIPIENTS = 0x004
    DELETE_RECIPIENTS = 0x008
    CHANGE_HEADERS = 0x010
    QUARANTINE = 0x020
    CHANGE_FROM = 0x040
    ADD_RECIPIENTS_WITH_ARGS = 0x080
    SET_SYMBOL_LIST = 0x100


class ProtocolFlag(enum.IntFlag):
    """Stages the milter skips or does not reply to (``SMFIP_*``), negotiated at start."""

    NONE = 0
    NO_CONNECT = 0x0000_0001
    NO_HELO = 0x0000_0002
    NO_MAIL = 0x0000_0004
    NO_RCPT = 0x0000_0008
    NO_BODY = 0x0000_0010
    NO_HEADERS = 0x0000_0020
    NO_END_OF_HEADERS = 0x0000_0040
    NO_REPLY_HEADER = 0x0000_0080
    NO_UNKNOWN = 0x0000_0100
    NO_DATA = 0x0000_0200
    SKIP = 0x0000_0400
    RCPT_REJECTED = 0x0000_0800
    NO_REPLY_CONNECT = 0x0000_1000
    NO_REPLY_HELO = 0x0000_2000
    NO_REPLY_MAIL = 0x0000_4000
    NO_REPLY_RCPT = 0x0000_8000
    NO_REPLY_DATA = 0x0001_0000
    NO_REPLY_UNKNOWN = 0x0002_0000
    NO_REPLY_END_OF_HEADERS = 0x0004_0000
    NO_REPLY_BODY = 0x0008_0000
    HEADER_LEADING_SPACE = 0x0010_0000
    MAX_DATA_SIZE_256K = 0x1000_0000
    MAX_DATA_SIZE_1M = 0x2000_0000


class MacroStage(enum.IntEnum):
    """Stages for which the milter may request a list of macros (``SMFIM_*``)."""

    CONNECT = 0
    HELO = 1
    MAIL = 2
    RCPT = 3
    DATA = 4
    END_OF_MESSAGE = 5
    END_OF_HEADERS = 6


# The no-reply flag that lets the milter stay silent after each command. Commands that are
# missing here either never get a reply (ABORT, MACRO, QUIT) or always get one
# (OPTION_NEGOTIATION, END_OF_MESSAGE).
NO_REPLY_FLAG_OF_COMMAND: dict[Command, ProtocolFlag] = {
    Command.CONNECT: ProtocolFlag.NO_REPLY_CONNECT,
    Command.HELO: ProtocolFlag.NO_REPLY_HELO,
    Command.MAIL: ProtocolFlag.NO_REPLY_MAIL,
    Command.RCPT: ProtocolFlag.NO_REPLY_RCPT,
    Command.DATA: ProtocolFlag.NO_REPLY_DATA,
    Command.HEADER: ProtocolFlag.NO_REPLY_HEADER,
    Command.END_OF_HEADERS: ProtocolFlag.NO_REPLY_END_OF_HEADERS,
    Command.BODY: ProtocolFlag.NO_REPLY_BODY,
    Command.UNKNOWN: ProtocolFlag.NO_REPLY_UNKNOWN,
}

COMMANDS_WITHOUT_REPLY = frozenset({Command.ABORT, Command.MACRO, Command.QUIT})

# Address families in the CONNECT command (``SMFIA_*``).
FAMILY_UNKNOWN = "U"
FAMILY_UNIX = "L"
FAMILY_INET = "4"
FAMILY_INET6 = "6"
