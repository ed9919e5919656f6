"""An MTA-side driver of the milter protocol, for tests and benchmarks.

It speaks protocol version 6 over a real socket the way Postfix does. It offers options
and sends macros before commands. It waits for a reply only where the negotiated flags
require one, and it collects the modifications sent at end of message. It is written
apart from the milter's codec, so that a mistake in the codec does not cancel out in the
tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

# Everything libmilter 8.14+ and Postfix 2.6+ can offer.
ALL_ACTIONS = 0x1FF
ALL_PROTOCOL_FLAGS = 0x001F_FFFF

# No-reply flag of each command code, from Sendmail's mfdef.h.
NO_REPLY_FLAGS = {
    b"C": 0x1000,
    b"H": 0x2000,
    b"M": 0x4000,
    b"R": 0x8000,
    b"T": 0x1_0000,
    b"U": 0x2_0000,
    b"N": 0x4_0000,
    b"B": 0x8_0000,
    b"L": 0x80,
}
SKIP_FLAGS = {
    b"C": 0x1,
    b"H": 0x2,
    b"M": 0x4,
    b"R": 0x8,
    b"B": 0x10,
    b"L": 0x20,
    b"N": 0x40,
    b"U": 0x100,
    b"T": 0x200,
}
LEADING_SPACE = 0x10_0000
FINAL_REPLIES = frozenset(b"acdrtyf4")


@dataclass(frozen=True)
class Frame:
    """One frame from the milter: its reply code and data."""

    code: bytes
    data: bytes


@dataclass(frozen=True)
class Negotiated:
    """The milter's reply to the option negotiation."""

    version: int
    actions: int
    protocol: int
    symbol_lists: dict[int, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class HeaderModification:
    """A header change from the milter: ``h`` add, ``i`` insert or ``m`` change."""

    kind: str
    index: int | None
    name: str
    value: str


def frame(code: bytes, data: bytes = b"") -> bytes:
    """Encode one MTA command frame."""
    return struct.pack(">I", len(data) + 1) + code + data


def strings(*values: str | bytes) -> bytes:
    """Encode NUL-terminated strings."""
    return b"".join((v.encode() if isinstance(v, str) else v) + b"\0" for v in values)


def macro_frame(command: bytes, macros: Mapping[str, str]) -> bytes:
    """Encode a MACRO command for ``command``."""
    return frame(b"D", command + b"".join(strings(name, value) for name, value in macros.items()))


def parse_modification(reply: Frame) -> HeaderModification:
    """Decode an ADD_HEADER, INSERT_HEADER or CHANGE_HEADER frame."""
    data = reply.data
    index = None
    if reply.code in (b"i", b"m"):
        (index,) = struct.unpack_from(">I", data)
        data = data[4:]
    assert data.endswith(b"\0"), data
    name, value = data[:-1].split(b"\0")
    return HeaderModification(reply.code.decode(), index, name.decode(), value.decode())


class MtaDriver:
    """One MTA connection to a milter. Use :meth:`open`, then the command methods."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.negotiated: Negotiated | None = None

    @classmethod
    async def open(cls, address: tuple[str, int] | str) -> MtaDriver:
        """Connect to a milter at ``(host, port)`` or a Unix socket path."""
        if isinstance(address, str):
            reader, writer = await asyncio.open_unix_connection(address)
        else:
            reader, writer = await asyncio.open_connection(*address)
        return cls(reader, writer)

    async def close(self) -> None:
        """Close the socket."""
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()

    async def read_frame(self) -> Frame:
        """Read one frame from the milter."""
        header = await self.reader.readexactly(4)
        (length,) = struct.unpack(">I", header)
        body = await self.reader.readexactly(length)
        return Frame(body[:1], body[1:])

    async def closed_by_milter(self) -> bool:
        """Wait for the milter's next byte or EOF; return True if it closed the connection."""
        try:
            data = await self.reader.read(1)
        except ConnectionError:
            return True
        return data == b""

    async def negotiate(
        self,
        version: int = 6,
        actions: int = ALL_ACTIONS,
        protocol: int = ALL_PROTOCOL_FLAGS,
    ) -> Negotiated:
        """Offer options and decode the milter's choice, with its macro lists."""
        self.writer.write(frame(b"O", struct.pack(">III", version, actions, protocol)))
        reply = await self.read_frame()
        assert reply.code == b"O", reply
        got_version, got_actions, got_protocol = struct.unpack_from(">III", reply.data)
        rest = reply.data[12:]
        lists: dict[int, list[str]] = {}
        while rest:
            (stage,) = struct.unpack_from(">I", rest)
            end = rest.index(b"\0", 4)
            lists[stage] = rest[4:end].decode().split()
            rest = rest[end + 1 :]
        self.negotiated = Negotiated(got_version, got_actions, got_protocol, lists)
        return self.negotiated

    def _wants_reply(self, code: bytes) -> bool:
        assert self.negotiated is not None, "negotiate() first"
        flag = NO_REPLY_FLAGS.get(code)
        return flag is None or not self.negotiated.protocol & flag

    def _skipped(self, code: bytes) -> bool:
        assert self.negotiated is not None, "negotiate() first"
        return bool(self.negotiated.protocol & SKIP_FLAGS.get(code, 0))

    @property
    def leading_space(self) -> bool:
        """True when header values go out with the space after the colon."""
        return self.negotiated is not None and bool(self.negotiated.protocol & LEADING_SPACE)

    async def command(
        self, code: bytes, data: bytes = b"", macros: Mapping[str, str] | None = None
    ) -> Frame | None:
        """Send macros (if any) and a command; return the reply if the milter owes one."""
        if self._skipped(code):
            return None
        # Like Postfix, the macros and their command go out in one write.
        if macros is not None:
            self.writer.write(macro_frame(code, macros) + frame(code, data))
        else:
            self.writer.write(frame(code, data))
        if not self._wants_reply(code):
            return None
        await self.writer.drain()
        reply = await self.read_frame()
        assert reply.code == b"c", f"expected CONTINUE after {code!r}, got {reply}"
        return reply

    async def connect(
        self,
        hostname: str = "client.example.test",
        address: str = "192.0.2.10",
        port: int = 54321,
        macros: Mapping[str, str] | None = None,
    ) -> None:
        """Send CONNECT for an IPv4 client."""
        data = strings(hostname) + b"4" + struct.pack(">H", port) + strings(address)
        await self.command(b"C", data, macros)

    async def helo(
        self, name: str = "client.example.test", macros: Mapping[str, str] | None = None
    ) -> None:
        """Send HELO."""
        await self.command(b"H", strings(name), macros)

    async def mail(
        self, sender: str, *parameters: str, macros: Mapping[str, str] | None = None
    ) -> None:
        """Send MAIL FROM."""
        await self.command(b"M", strings(sender, *parameters), macros)

    async def rcpt(
        self, recipient: str, *parameters: str, macros: Mapping[str, str] | None = None
    ) -> None:
        """Send RCPT TO."""
        await self.command(b"R", strings(recipient, *parameters), macros)

    async def data(self, macros: Mapping[str, str] | None = None) -> None:
        """Send DATA."""
        await self.command(b"T", b"", macros)

    async def header(
        self, name: str | bytes, value: str | bytes, macros: Mapping[str, str] | None = None
    ) -> None:
        """Send one header with ``value`` exactly as given."""
        await self.command(b"L", strings(name, value), macros)

    async def end_of_headers(self, macros: Mapping[str, str] | None = None) -> None:
        """Send END_OF_HEADERS."""
        await self.command(b"N", b"", macros)

    async def body(self, chunk: bytes) -> None:
        """Send one body chunk."""
        await self.command(b"B", chunk)

    async def end_of_message(
        self, macros: Mapping[str, str] | None = None, data: bytes = b""
    ) -> tuple[list[HeaderModification], Frame]:
        """Send END_OF_MESSAGE; return the modifications and the final reply."""
        if macros is not None:
            self.writer.write(macro_frame(b"E", macros) + frame(b"E", data))
        else:
            self.writer.write(frame(b"E", data))
        await self.writer.drain()
        modifications: list[HeaderModification] = []
        while True:
            reply = await self.read_frame()
            if reply.code[0] in FINAL_REPLIES:
                return modifications, reply
            if reply.code == b"p":
                continue
            modifications.append(parse_modification(reply))

    async def abort(self) -> None:
        """Send ABORT."""
        self.writer.write(frame(b"A"))
        await self.writer.drain()

    async def quit(self) -> None:
        """Send QUIT and close the socket."""
        self.writer.write(frame(b"Q"))
        await self.writer.drain()
        await self.close()

    async def start_session(self, macros: Mapping[str, str] | None = None) -> None:
        """Negotiate, then send CONNECT and HELO as Postfix would."""
        await self.negotiate()
        await self.connect(macros=macros if macros is not None else POSTFIX_CONNECT_MACROS)
        await self.helo()

    async def send_message(
        self,
        headers: Iterable[tuple[str, str]],
        body: bytes = b"Hello.\r\n",
        *,
        sender: str = "<sender@example.com>",
        recipients: Sequence[str] = ("<rcpt@example.org>",),
        queue_id: str = "4ABC123DEF",
    ) -> tuple[list[HeaderModification], Frame]:
        """Send one whole message as Postfix does, then ABORT; return the EOM result.

        ``headers`` values are sent with one space after the colon when the milter asked
        for the leading space.
        """
        await self.mail(sender, macros={"{mail_addr}": sender.strip("<>")})
        for index, recipient in enumerate(recipients):
            # Postfix assigns the queue id after the first accepted recipient.
            await self.rcpt(recipient, macros={"i": queue_id} if index else {})
        await self.data(macros={"i": queue_id})
        space = " " if self.leading_space else ""
        for name, value in headers:
            await self.header(name, space + value)
        await self.end_of_headers(macros={"i": queue_id})
        if body:
            await self.body(body)
        result = await self.end_of_message(macros={"i": queue_id})
        await self.abort()
        return result


POSTFIX_CONNECT_MACROS = {
    "j": "mta.example.test",
    "v": "Postfix 3.7.11",
    "{daemon_name}": "mta.example.test",
    "{client_addr}": "192.0.2.10",
    "{client_port}": "54321",
}
