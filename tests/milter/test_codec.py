"""The sans-IO codec: exact bytes in both directions, and every protocol error."""

from __future__ import annotations

import struct

import pytest

from opentelemetry_instrumentation_smtp.milter import events
from opentelemetry_instrumentation_smtp.milter.codec import MilterCodec, ProtocolError, UsageError
from opentelemetry_instrumentation_smtp.milter.protocol import Action, MacroStage, ProtocolFlag
from opentelemetry_instrumentation_smtp.milter.session import REQUESTED_PROTOCOL

from .driver import ALL_ACTIONS, ALL_PROTOCOL_FLAGS, frame, macro_frame, strings

OFFER = frame(b"O", struct.pack(">III", 6, ALL_ACTIONS, ALL_PROTOCOL_FLAGS))
OBSERVE = ProtocolFlag.NO_REPLY_MAIL | ProtocolFlag.NO_REPLY_HEADER


def negotiated(
    protocol: ProtocolFlag = OBSERVE, actions: Action = Action.ADD_HEADERS | Action.CHANGE_HEADERS
) -> MilterCodec:
    codec = MilterCodec(protocol=protocol, actions=actions)
    codec.receive_data(OFFER)
    codec.negotiation_reply()
    return codec


def test_negotiation_reply_bytes_with_macro_lists() -> None:
    codec = MilterCodec(
        protocol=ProtocolFlag.NO_REPLY_MAIL | ProtocolFlag.HEADER_LEADING_SPACE,
        actions=Action.ADD_HEADERS,
        macro_requests={MacroStage.CONNECT: ("j", "{client_addr}"), MacroStage.MAIL: ("i",)},
    )
    assert codec.receive_data(OFFER) == [
        events.OptionNegotiation(6, Action(ALL_ACTIONS), ProtocolFlag(ALL_PROTOCOL_FLAGS))
    ]
    reply = codec.negotiation_reply()
    expected_data = (
        struct.pack(">III", 6, 0x101, 0x0010_4000) + b"\0\0\0\0j {client_addr}\0" + b"\0\0\0\2i\0"
    )
    assert reply == struct.pack(">I", len(expected_data) + 1) + b"O" + expected_data
    assert codec.actions == Action.ADD_HEADERS | Action.SET_SYMBOL_LIST
    assert codec.protocol == ProtocolFlag.NO_REPLY_MAIL | ProtocolFlag.HEADER_LEADING_SPACE


def test_negotiation_keeps_only_offered_flags() -> None:
    codec = MilterCodec(
        protocol=ProtocolFlag.NO_REPLY_MAIL | ProtocolFlag.HEADER_LEADING_SPACE,
        actions=Action.ADD_HEADERS | Action.CHANGE_HEADERS,
        macro_requests={MacroStage.MAIL: ("i",)},
    )
    # An MTA of protocol version 2 without no-reply flags, macro lists or header changes.
    codec.receive_data(frame(b"O", struct.pack(">III", 2, 0x01, 0x7F)))
    reply = codec.negotiation_reply()
    assert reply == frame(b"O", struct.pack(">III", 2, 0x01, 0))
    assert codec.version == 2
    assert codec.needs_reply(events.MailFrom("<a@b>", ()))


def test_commands_decode_to_events() -> None:
    codec = negotiated(protocol=REQUESTED_PROTOCOL)
    data = b"".join(
        [
            macro_frame(b"C", {"j": "mta.example.test", "{client_addr}": "192.0.2.1"}),
            frame(
                b"C",
                strings("client.example") + b"4" + struct.pack(">H", 2525) + strings("192.0.2.1"),
            ),
            frame(
                b"C", strings("v6.example") + b"6" + struct.pack(">H", 25) + strings("2001:db8::1")
            ),
            frame(b"C", strings("local") + b"L" + struct.pack(">H", 0) + strings("/run/socket")),
            frame(b"C", strings("unknown") + b"U"),
            frame(b"H", strings("client.example")),
            frame(b"M", strings("<a@example.com>", "SIZE=100", "BODY=8BITMIME")),
            frame(b"R", strings("<b@example.org>")),
            frame(b"T"),
            frame(b"L", strings("Subject", " hello")),
            frame(b"N"),
            frame(b"B", b"line\r\n"),
            frame(b"U", strings("XYZZY arg")),
            frame(b"K"),
        ]
    )
    assert codec.receive_data(data) == [
        events.MacroDefinition(b"C", {"j": "mta.example.test", "{client_addr}": "192.0.2.1"}),
        events.Connect("client.example", "4", 2525, "192.0.2.1"),
        events.Connect("v6.example", "6", 25, "2001:db8::1"),
        events.Connect("local", "L", 0, "/run/socket"),
        events.Connect("unknown", "U", None, None),
        events.Helo("client.example"),
        events.MailFrom("<a@example.com>", ("SIZE=100", "BODY=8BITMIME")),
        events.RcptTo("<b@example.org>", ()),
        events.Data(),
        events.Header("Subject", " hello"),
        events.EndOfHeaders(),
        events.BodyChunk(b"line\r\n"),
        events.UnknownCommand("XYZZY arg"),
        events.QuitNewConnection(),
    ]


def test_end_of_message_abort_and_quit() -> None:
    codec = negotiated()
    assert codec.receive_data(frame(b"E", b"tail")) == [events.EndOfMessage(b"tail")]
    assert codec.reply_expected()
    assert codec.continue_() == b"\0\0\0\x01c"
    assert codec.receive_data(frame(b"A") + frame(b"Q")) == [events.Abort(), events.Quit()]
    assert not codec.reply_expected()


def test_non_utf8_bytes_survive_round_trip() -> None:
    codec = negotiated()
    (header,) = codec.receive_data(frame(b"L", b"X-Raw\0caf\xe9\0"))
    assert isinstance(header, events.Header)
    codec.receive_data(frame(b"E"))
    assert codec.change_header(1, "X-Raw", header.value) == frame(
        b"m", struct.pack(">I", 1) + b"X-Raw\0caf\xe9\0"
    )


def test_frame_split_at_every_byte() -> None:
    frames = [
        macro_frame(b"M", {"i": "QID"}),
        frame(b"M", strings("<a@b>")),
        frame(b"L", strings("A", "b")),
    ]
    data = b"".join(frames)
    boundaries = {len(frames[0]), len(frames[0]) + len(frames[1])}
    expected = negotiated().receive_data(data)
    assert len(expected) == 3
    for cut in range(1, len(data)):
        codec = negotiated()
        first = codec.receive_data(data[:cut])
        assert codec.has_partial_frame == (cut not in boundaries)
        assert first + codec.receive_data(data[cut:]) == expected, cut
        assert not codec.has_partial_frame


def test_frame_spread_over_three_reads() -> None:
    header = frame(b"L", strings("Subject", "x" * 40))
    mail = frame(b"M", strings("<a@b>"))
    codec = negotiated()
    # The first read ends inside the header frame, the second read too, and the third
    # completes it and carries a whole frame more.
    assert codec.receive_data(header[:10]) == []
    assert codec.receive_data(header[10:30]) == []
    assert codec.has_partial_frame
    decoded = codec.receive_data(header[30:] + mail)
    assert decoded == [events.Header("Subject", "x" * 40), events.MailFrom("<a@b>", ())]
    assert not codec.has_partial_frame


def test_buffered_events_stopped_early_keep_the_rest() -> None:
    codec = negotiated()
    codec.feed(frame(b"M", strings("<a@b>")) + frame(b"L", strings("A", "b")))
    iterator = codec.buffered_events()
    assert next(iterator) == events.MailFrom("<a@b>", ())
    iterator.close()
    assert codec.has_partial_frame
    assert codec.next_event() == events.Header("A", "b")
    assert codec.next_event() is None
    assert not codec.has_partial_frame


def test_bytes_fed_between_yields_are_decoded() -> None:
    codec = negotiated()
    codec.feed(frame(b"M", strings("<a@b>")))
    decoded = []
    for event in codec.buffered_events():
        decoded.append(event)
        if len(decoded) == 1:
            codec.feed(frame(b"R", strings("<c@d>")))
    assert decoded == [events.MailFrom("<a@b>", ()), events.RcptTo("<c@d>", ())]
    assert not codec.has_partial_frame


def test_one_byte_at_a_time() -> None:
    data = frame(b"M", strings("<a@b>")) + frame(b"E")
    codec = negotiated()
    decoded = []
    for index in range(len(data)):
        decoded += codec.receive_data(data[index : index + 1])
    assert decoded == [events.MailFrom("<a@b>", ()), events.EndOfMessage(b"")]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\0\0\0\0", "frame of length 0"),
        (frame(b"Z"), "unknown command code b'Z'"),
        (frame(b"H", b"no-nul"), "HELO data does not end with a NUL byte"),
        (frame(b"L", strings("only-name")), "HEADER has 1 string instead of 2"),
        (frame(b"L", strings("a", "b", "c")), "HEADER has 3 strings instead of 2"),
        (frame(b"D"), "MACRO has no command code"),
        (frame(b"D", b"M" + strings("i")), "MACRO has a name without a value"),
        (frame(b"C", b"host"), "CONNECT has no host name"),
        (frame(b"C", strings("host") + b"4\0"), "CONNECT has an invalid address for family '4'"),
        (frame(b"C", strings("host") + b"X\0\0a\0"), "invalid address for family 'X'"),
        (frame(b"O", b"\0\0\0\6"), "OPTION_NEGOTIATION has 4 data bytes"),
        (frame(b"O", struct.pack(">III", 1, 0, 0)), "version 1 is older than version 2"),
    ],
)
def test_malformed_frames_raise(data: bytes, message: str) -> None:
    codec = negotiated()
    with pytest.raises(ProtocolError, match=message.replace("(", r"\(").replace("[", r"\[")):
        codec.receive_data(data)


def test_oversized_frame_raises_before_its_data_arrives() -> None:
    codec = MilterCodec(max_frame_size=1000)
    with pytest.raises(ProtocolError, match="frame of 1001 bytes exceeds the limit of 1000"):
        codec.receive_data(struct.pack(">I", 1001) + b"B")


def test_command_before_negotiation_raises() -> None:
    with pytest.raises(ProtocolError, match="HELO arrived before option negotiation"):
        MilterCodec().receive_data(frame(b"H", strings("x")))


def test_command_while_reply_pending_raises() -> None:
    codec = negotiated()
    codec.receive_data(frame(b"H", strings("x")))
    with pytest.raises(ProtocolError, match="MAIL arrived while a reply to HELO is pending"):
        codec.receive_data(frame(b"M", strings("<a@b>")))


def test_truncated_frame_at_eof_raises() -> None:
    codec = negotiated()
    codec.receive_data(frame(b"M", strings("<a@b>"))[:-2])
    with pytest.raises(ProtocolError, match="connection closed inside a frame, 9 bytes left"):
        codec.receive_eof()


def test_no_reply_flags_decide_which_events_need_replies() -> None:
    codec = negotiated()
    assert not codec.needs_reply(events.MailFrom("<a@b>", ()))
    assert not codec.needs_reply(events.Header("a", "b"))
    assert codec.needs_reply(events.RcptTo("<a@b>", ()))
    assert codec.needs_reply(events.EndOfMessage(b""))
    assert not codec.needs_reply(events.Abort())
    assert not codec.needs_reply(events.MacroDefinition(b"M", {}))


def test_final_reply_bytes() -> None:
    expected = {
        "continue_": b"c",
        "accept": b"a",
        "tempfail": b"t",
        "reject": b"r",
        "discard": b"d",
    }
    for method, code in expected.items():
        codec = negotiated()
        codec.receive_data(frame(b"E"))
        assert getattr(codec, method)() == b"\0\0\0\x01" + code


def test_reply_code_bytes() -> None:
    codec = negotiated()
    codec.receive_data(frame(b"R", strings("<a@b>")))
    assert codec.reply_code(550, "5.7.1 not here") == frame(b"y", b"550 5.7.1 not here\0")
    codec.receive_data(frame(b"R", strings("<a@b>")))
    with pytest.raises(UsageError, match="invalid SMTP reply code 250"):
        codec.reply_code(250, "ok")
    with pytest.raises(UsageError, match="contains NUL, CR or LF"):
        codec.reply_code(451, "a\r\nb")


def test_header_modification_bytes() -> None:
    codec = negotiated()
    codec.receive_data(frame(b"E"))
    assert codec.progress() == b"\0\0\0\x01p"
    assert codec.add_header("traceparent", "00-x") == frame(b"h", b"traceparent\x0000-x\0")
    assert codec.insert_header(0, "X-A", "b") == frame(b"i", b"\0\0\0\0X-A\0b\0")
    assert codec.change_header(2, "X-A", "") == frame(b"m", b"\0\0\0\2X-A\0\0")
    assert codec.continue_() == b"\0\0\0\x01c"


def test_header_values_get_leading_space_when_negotiated() -> None:
    codec = negotiated(protocol=ProtocolFlag.HEADER_LEADING_SPACE)
    codec.receive_data(frame(b"E"))
    assert codec.add_header("X-A", "b") == frame(b"h", b"X-A\0 b\0")
    # Deleting a field sends an empty value, never a lone space.
    assert codec.change_header(1, "X-A", "") == frame(b"m", b"\0\0\0\1X-A\0\0")


def test_modifications_outside_end_of_message_raise() -> None:
    codec = negotiated()
    with pytest.raises(UsageError, match="only allowed in reply to END_OF_MESSAGE"):
        codec.add_header("X-A", "b")
    codec.receive_data(frame(b"R", strings("<a@b>")))
    with pytest.raises(UsageError, match="only allowed in reply to END_OF_MESSAGE"):
        codec.change_header(1, "X-A", "b")


def test_modifications_need_negotiated_action() -> None:
    codec = negotiated(actions=Action.NONE)
    codec.receive_data(frame(b"E"))
    with pytest.raises(UsageError, match="needs the ADD_HEADERS action"):
        codec.add_header("X-A", "b")
    with pytest.raises(UsageError, match="needs the CHANGE_HEADERS action"):
        codec.change_header(1, "X-A", "b")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("", "v", "invalid header name ''"),
        ("X A", "v", "invalid header name 'X A'"),
        ("X:A", "v", "invalid header name 'X:A'"),
        ("X-A", "a\r\nb", "contains NUL, CR or LF"),
        ("X-A", "a\0b", "contains NUL, CR or LF"),
    ],
)
def test_invalid_headers_raise(name: str, value: str, message: str) -> None:
    codec = negotiated()
    codec.receive_data(frame(b"E"))
    with pytest.raises(UsageError, match=message):
        codec.add_header(name, value)


def test_replies_without_pending_command_raise() -> None:
    codec = negotiated()
    with pytest.raises(UsageError, match="waits for no reply"):
        codec.continue_()
    with pytest.raises(UsageError, match="waits for no reply"):
        codec.progress()
    with pytest.raises(UsageError, match="no option negotiation is waiting"):
        codec.negotiation_reply()


def test_abort_cancels_pending_reply() -> None:
    codec = negotiated()
    codec.receive_data(frame(b"E"))
    codec.receive_data(frame(b"A"))
    assert not codec.reply_expected()
    with pytest.raises(UsageError, match="waits for no reply"):
        codec.continue_()
