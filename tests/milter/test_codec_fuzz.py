"""Property tests: no input makes the codec or a session fail other than with ProtocolError."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider

from opentelemetry_instrumentation_smtp.milter import events
from opentelemetry_instrumentation_smtp.milter.codec import MilterCodec, ProtocolError
from opentelemetry_instrumentation_smtp.milter.config import HeaderPolicy, MilterConfig
from opentelemetry_instrumentation_smtp.milter.session import REQUESTED_PROTOCOL, MilterSession
from opentelemetry_instrumentation_smtp.milter.tracing import MilterTelemetry

from .driver import ALL_ACTIONS, ALL_PROTOCOL_FLAGS, frame, macro_frame, strings

OFFER = frame(b"O", struct.pack(">III", 6, ALL_ACTIONS, ALL_PROTOCOL_FLAGS))
TELEMETRY = MilterTelemetry(TracerProvider())
POLICY = HeaderPolicy(inject_traceparent=True, rewrite_traceparent=True, strip_external=True)

text = st.text(st.characters(blacklist_characters="\0", codec="utf-8"), max_size=20)
header_names = st.sampled_from(["traceparent", "TraceParent", "tracestate", "Message-ID", "X-A"])
traceparents = st.sampled_from(
    [
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        " 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r",
        "00-00000000000000000000000000000000-0000000000000000-00",
        "garbage",
        "",
    ]
)

# Frames that are each valid on their own; the order between them is arbitrary.
valid_frames = st.one_of(
    st.builds(
        lambda h, a: frame(b"C", strings(h) + b"4" + struct.pack(">H", 25) + strings(a)), text, text
    ),
    st.builds(lambda h: frame(b"H", strings(h)), text),
    st.builds(lambda a: frame(b"M", strings(a)), text),
    st.builds(lambda a: frame(b"R", strings(a)), text),
    st.builds(
        lambda name, value: frame(b"L", strings(name, value)), header_names, traceparents | text
    ),
    st.builds(lambda data: frame(b"B", data), st.binary(max_size=40)),
    st.builds(
        lambda code, value: macro_frame(code, {"i": value}),
        st.sampled_from([b"M", b"R", b"T", b"E", b"C"]),
        text,
    ),
    st.sampled_from(
        [frame(b"T"), frame(b"N"), frame(b"E"), frame(b"A"), frame(b"K"), frame(b"U", strings("X"))]
    ),
)


def negotiated_codec() -> MilterCodec:
    codec = MilterCodec(protocol=REQUESTED_PROTOCOL)
    codec.receive_data(OFFER)
    codec.negotiation_reply()
    return codec


@settings(max_examples=400)
@given(st.binary(max_size=200))
def test_random_bytes_decode_or_raise_protocol_error(data: bytes) -> None:
    codec = negotiated_codec()
    try:
        decoded = codec.receive_data(data)
    except ProtocolError:
        return
    assert all(isinstance(event, events.Event) for event in decoded)


@settings(max_examples=200)
@given(st.lists(valid_frames, max_size=12), st.data())
def test_split_points_do_not_change_events(frames: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(frames)
    whole = negotiated_codec()
    try:
        expected = whole.receive_data(stream)
    except ProtocolError:
        return
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    codec = negotiated_codec()
    decoded: list[events.Event] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        decoded += codec.receive_data(stream[start:cut])
        start = cut
    assert decoded == expected
    assert not codec.has_partial_frame


@settings(max_examples=300)
@given(st.lists(valid_frames | st.binary(max_size=12), max_size=20))
def test_session_survives_any_frame_order(chunks: list[bytes]) -> None:
    session = MilterSession(MilterConfig(policy=POLICY), TELEMETRY)
    session.receive_data(OFFER)
    for chunk in chunks:
        try:
            session.receive_data(chunk)
        except ProtocolError:
            session.connection_lost("protocol_error")
            return
        # Before it returns, the session replies to every command that waits for a reply.
        assert not session.codec.reply_expected()
