"""Sans-IO codec for the milter side of the milter protocol, version 6.

Bytes from the MTA go in through :meth:`MilterCodec.receive_data` and come out as events.
Replies go in through the reply methods and come out as bytes to write. The codec opens
no socket, starts no task and logs nothing, so a server, a test or a fuzzer can drive it.
It also enforces the order of the conversation: a reply is only encoded while the MTA waits
for one, and modifications only while it waits for the reply to end of message.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping, Sequence

from . import events
from .decoding import PARSERS, ProtocolError
from .protocol import (
    COMMANDS_WITHOUT_REPLY,
    DEFAULT_MAX_FRAME_SIZE,
    LENGTH_PREFIX_SIZE,
    NO_REPLY_FLAG_OF_COMMAND,
    PROTOCOL_VERSION,
    Action,
    Command,
    MacroStage,
    ProtocolFlag,
    Reply,
)

__all__ = ["MilterCodec", "ProtocolError", "UsageError", "encode_frame"]

_UINT32 = struct.Struct(">I")
_OPTION_NEGOTIATION = struct.Struct(">III")
# Commands by their code byte as an int, which is what indexing bytes returns.
_COMMANDS = {command.value[0]: command for command in Command}
_MINIMUM_MTA_VERSION = 2


class UsageError(Exception):
    """The caller asked the codec for a reply that the conversation does not allow now."""


def encode_frame(code: bytes, data: bytes = b"") -> bytes:
    """Encode one frame: the length of code and data, the 1-byte code, then the data."""
    return _UINT32.pack(len(data) + 1) + code + data


def _encode_strings(*values: str) -> bytes:
    return b"".join(value.encode("utf-8", "surrogateescape") + b"\0" for value in values)


def _check_header(name: str, value: str) -> None:
    if not name or any(char <= " " or char == ":" or char > "~" for char in name):
        raise UsageError(f"invalid header name {name!r}: use printable ASCII without ':'")
    if any(char in value for char in "\0\r\n"):
        raise UsageError(f"invalid value for header {name!r}: it contains NUL, CR or LF")


class MilterCodec:
    """State of one MTA connection as far as the protocol is concerned.

    ``protocol`` and ``actions`` are what the milter would like. The agreed values, the
    intersection with the MTA's offer, are in :attr:`protocol` and :attr:`actions` once
    :meth:`negotiation_reply` has run. ``macro_requests`` lists, per stage, the macros the
    MTA should send, and is sent only when the MTA offers to accept such a list.
    """

    def __init__(
        self,
        *,
        protocol: ProtocolFlag = ProtocolFlag.NONE,
        actions: Action = Action.NONE,
        macro_requests: Mapping[MacroStage, Sequence[str]] | None = None,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    ) -> None:
        self._requested_protocol = protocol
        self._requested_actions = actions
        self._macro_requests = dict(macro_requests or {})
        self._max_frame_size = max_frame_size
        # Received bytes; those before ``_position`` are decoded already. The buffer is
        # the ``bytes`` object of the last read while no frame spans two reads, so that
        # the common case copies nothing, and a ``bytearray`` while one does.
        self._buffer: bytes | bytearray = b""
        self._position = 0
        self._error: ProtocolError | None = None
        self._silent_commands: frozenset[Command] = frozenset()
        self._reply_event_types: frozenset[type[events.Event]] = frozenset()
        self._offer: events.OptionNegotiation | None = None
        self.version = 0
        self.protocol = ProtocolFlag.NONE
        self.actions = Action.NONE
        self.negotiated = False
        # Commands whose reply the MTA still waits for, oldest first.
        self._owed: list[Command] = []
        self._update_silent_commands()

    # Receiving.

    def feed(self, data: bytes) -> None:
        """Append bytes from the MTA; :meth:`next_event` decodes them."""
        buffer = self._buffer
        position = self._position
        if position == len(buffer):
            self._buffer = bytes(data)
            self._position = 0
            return
        if isinstance(buffer, bytearray):
            del buffer[:position]
        else:
            buffer = bytearray(memoryview(buffer)[position:])
        buffer += data
        self._buffer = buffer
        self._position = 0

    def next_event(self) -> events.Event | None:
        """Decode the next complete frame, or return ``None`` until more bytes arrive.

        Raises :class:`ProtocolError` on a frame that is malformed, oversized, out of order
        or of an unknown command, and again on every later call.
        """
        for event in self.buffered_events():
            return event
        return None

    def buffered_events(self) -> Iterator[events.Event]:
        """Decode and yield the complete frames buffered so far, one at a time.

        Raises like :meth:`next_event` when it reaches a bad frame, after yielding the
        events before it. Stopping early leaves the frames not yet yielded buffered.
        """
        if self._error is not None:
            raise self._error
        try:
            while True:
                # Read again after each yield, because the caller may feed more bytes.
                buffer = self._buffer
                start = self._position
                end = len(buffer)
                if end - start < LENGTH_PREFIX_SIZE:
                    return
                (length,) = _UINT32.unpack_from(buffer, start)
                if length == 0:
                    raise ProtocolError("frame of length 0 has no command code")
                if length > self._max_frame_size:
                    raise ProtocolError(
                        f"frame of {length} bytes exceeds the limit of {self._max_frame_size} bytes"
                    )
                code_index = start + LENGTH_PREFIX_SIZE
                frame_end = code_index + length
                if frame_end > end:
                    return
                code = buffer[code_index]
                data = bytes(buffer[code_index + 1 : frame_end])
                self._position = frame_end
                command = _COMMANDS.get(code)
                if command is None:
                    raise ProtocolError(f"unknown command code {bytes((code,))!r}")
                if not self.negotiated and command is not Command.OPTION_NEGOTIATION:
                    raise ProtocolError(f"{command.name} arrived before option negotiation")
                owed = self._owed
                if owed and command is not Command.ABORT and command is not Command.QUIT:
                    raise ProtocolError(
                        f"{command.name} arrived while a reply to {owed[0].name} is pending"
                    )
                if command is Command.OPTION_NEGOTIATION:
                    event: events.Event = self._parse_option_negotiation(data)
                else:
                    event = PARSERS[command](data)
                if command not in self._silent_commands:
                    owed.append(command)
                elif command is Command.ABORT or command is Command.QUIT:
                    # The MTA no longer waits for the owed replies. A late reply would
                    # be read as the reply to a later command, so none is sent.
                    owed.clear()
                yield event
        except ProtocolError as error:
            self._error = error
            raise

    def receive_data(self, data: bytes) -> list[events.Event]:
        """Append bytes from the MTA and decode every complete frame among them.

        Raises like :meth:`next_event`. The events decoded before the error are then lost,
        so a caller that must act on them uses :meth:`feed` and :meth:`next_event`.
        """
        self.feed(data)
        decoded: list[events.Event] = []
        while (event := self.next_event()) is not None:
            decoded.append(event)
        return decoded

    def receive_eof(self) -> None:
        """Record that the MTA closed the connection; raise if a frame was cut short."""
        unread = len(self._buffer) - self._position
        if unread:
            raise ProtocolError(f"connection closed inside a frame, {unread} bytes left unread")

    @property
    def has_partial_frame(self) -> bool:
        """True while bytes of an incomplete frame are buffered."""
        return len(self._buffer) > self._position

    def _update_silent_commands(self) -> None:
        # Set operations on IntFlag are slow, so the flags are turned into a set once.
        silent = set(COMMANDS_WITHOUT_REPLY)
        silent.add(Command.QUIT_NEW_CONNECTION)
        for command, flag in NO_REPLY_FLAG_OF_COMMAND.items():
            if self.protocol & flag:
                silent.add(command)
        self._silent_commands = frozenset(silent)
        self._reply_event_types = frozenset(
            event_type
            for event_type, command in events.COMMAND_OF_EVENT.items()
            if command not in silent
        )

    def _parse_option_negotiation(self, data: bytes) -> events.OptionNegotiation:
        if len(data) < _OPTION_NEGOTIATION.size:
            raise ProtocolError(f"OPTION_NEGOTIATION has {len(data)} data bytes instead of 12")
        version, actions, protocol = _OPTION_NEGOTIATION.unpack_from(data)
        if version < _MINIMUM_MTA_VERSION:
            raise ProtocolError(f"MTA protocol version {version} is older than version 2")
        offer = events.OptionNegotiation(version, Action(actions), ProtocolFlag(protocol))
        self._offer = offer
        self.negotiated = True
        return offer

    # Replying.

    def reply_expected(self) -> bool:
        """Return whether the MTA waits for a reply to a command decoded so far."""
        return bool(self._owed)

    def needs_reply(self, event: events.Event) -> bool:
        """Return whether the MTA waits for a reply to ``event``, given the negotiated flags.

        A batch of decoded events contains at most one such event, and it is the last.
        """
        return type(event) in self._reply_event_types

    def negotiation_reply(self) -> bytes:
        """Agree on version, actions and flags with the MTA's offer, and encode the reply."""
        offer = self._offer
        if offer is None or not self._owed or self._owed[0] is not Command.OPTION_NEGOTIATION:
            raise UsageError("no option negotiation is waiting for a reply")
        self._owed.pop(0)
        self.version = min(PROTOCOL_VERSION, offer.version)
        self.actions = self._requested_actions & offer.actions
        self.protocol = self._requested_protocol & offer.protocol
        self._update_silent_commands()
        if self._macro_requests and offer.actions & Action.SET_SYMBOL_LIST:
            self.actions |= Action.SET_SYMBOL_LIST
        data = _OPTION_NEGOTIATION.pack(self.version, self.actions, self.protocol)
        if self.actions & Action.SET_SYMBOL_LIST:
            for stage, names in sorted(self._macro_requests.items()):
                data += _UINT32.pack(stage) + " ".join(names).encode("ascii") + b"\0"
        return encode_frame(Command.OPTION_NEGOTIATION.value, data)

    def _final_reply(self, code: Reply, data: bytes = b"") -> bytes:
        if not self._owed:
            raise UsageError(f"cannot send {code.name}: the MTA waits for no reply")
        if self._owed[0] is Command.OPTION_NEGOTIATION:
            raise UsageError("the option negotiation needs negotiation_reply()")
        self._owed.pop(0)
        if not data:
            return _DATALESS_REPLIES[code]
        return encode_frame(code.value, data)

    def continue_(self) -> bytes:
        """Encode CONTINUE: go on with this message."""
        return self._final_reply(Reply.CONTINUE)

    def accept(self) -> bytes:
        """Encode ACCEPT: accept the message, or at CONNECT the whole SMTP session."""
        return self._final_reply(Reply.ACCEPT)

    def tempfail(self) -> bytes:
        """Encode TEMPFAIL, so the MTA sends the client a 4xx reply."""
        return self._final_reply(Reply.TEMPFAIL)

    def reject(self) -> bytes:
        """Encode REJECT, so the MTA sends the client a 5xx reply."""
        return self._final_reply(Reply.REJECT)

    def discard(self) -> bytes:
        """Encode DISCARD: the MTA accepts the message and drops it."""
        return self._final_reply(Reply.DISCARD)

    def reply_code(self, code: int, text: str) -> bytes:
        """Encode REPLY_CODE: reject (5xx) or tempfail (4xx) with this SMTP reply."""
        if not 400 <= code <= 599:
            raise UsageError(f"invalid SMTP reply code {code}: use 400 to 599")
        if any(char in text for char in "\0\r\n"):
            raise UsageError("invalid SMTP reply text: it contains NUL, CR or LF")
        return self._final_reply(Reply.REPLY_CODE, _encode_strings(f"{code} {text}".rstrip()))

    def progress(self) -> bytes:
        """Encode PROGRESS: the MTA restarts its timeout and keeps waiting."""
        if not self._owed:
            raise UsageError("cannot send PROGRESS: the MTA waits for no reply")
        return encode_frame(Reply.PROGRESS.value)

    def _modification(self, action: Action, code: Reply, data: bytes) -> bytes:
        if not self._owed or self._owed[0] is not Command.END_OF_MESSAGE:
            raise UsageError(f"{code.name} is only allowed in reply to END_OF_MESSAGE")
        if not self.actions & action:
            raise UsageError(f"{code.name} needs the {action.name} action, not negotiated")
        return encode_frame(code.value, data)

    def _header_value(self, value: str) -> str:
        if self.protocol & ProtocolFlag.HEADER_LEADING_SPACE and value:
            return " " + value
        return value

    def add_header(self, name: str, value: str) -> bytes:
        """Encode ADD_HEADER: append a header field at the end of the header section."""
        _check_header(name, value)
        data = _encode_strings(name, self._header_value(value))
        return self._modification(Action.ADD_HEADERS, Reply.ADD_HEADER, data)

    def insert_header(self, index: int, name: str, value: str) -> bytes:
        """Encode INSERT_HEADER: insert a header field at ``index`` (0 is the top)."""
        _check_header(name, value)
        if not 0 <= index <= 0xFFFF_FFFF:
            raise UsageError(f"invalid header index {index}: use 0 to 2**32 - 1")
        data = _UINT32.pack(index) + _encode_strings(name, self._header_value(value))
        return self._modification(Action.ADD_HEADERS, Reply.INSERT_HEADER, data)

    def change_header(self, occurrence: int, name: str, value: str) -> bytes:
        """Encode CHANGE_HEADER for the ``occurrence``-th (from 1) field named ``name``.

        An empty ``value`` deletes that field.
        """
        _check_header(name, value)
        if not 1 <= occurrence <= 0xFFFF_FFFF:
            raise UsageError(f"invalid header occurrence {occurrence}: use 1 to 2**32 - 1")
        data = _UINT32.pack(occurrence) + _encode_strings(name, self._header_value(value))
        return self._modification(Action.CHANGE_HEADERS, Reply.CHANGE_HEADER, data)


# CONTINUE and the other replies without data, encoded once.
_DATALESS_REPLIES = {code: encode_frame(code.value) for code in Reply}
