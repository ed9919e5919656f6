"""smtplib sends against a real server: spans, attributes, and the bytes on the wire."""

from __future__ import annotations

import re
import smtplib
from email.message import EmailMessage

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from opentelemetry_instrumentation_smtp import SmtpInstrumentor
from tests.conftest import Telemetry
from tests.smtpserver import EXIM_QUEUED, POSTFIX_QUEUED, SENDMAIL_QUEUED, RecordingServer

TRACEPARENT_LINE = re.compile(rb"^traceparent: 00-([0-9a-f]{32})-([0-9a-f]{16})-0[0-3]\r\n")

RAW = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: hi\r\nMessage-ID: <m1@example.com>\r\n\r\nline one\r\n.dot line\r\n"


def make_message() -> EmailMessage:
    message = EmailMessage()
    message["From"] = "sender@example.com"
    message["To"] = "rcpt@example.com"
    message["Subject"] = "Test"
    message["Message-ID"] = "<abc@example.com>"
    message.set_content("Hello.\n")
    return message


def strip_traceparent(data: bytes) -> tuple[bytes, bytes]:
    match = TRACEPARENT_LINE.match(data)
    assert match, data[:120]
    return data[: match.end()], data[match.end() :]


def test_sendmail_span_and_header(
    instrument: SmtpInstrumentor, telemetry: Telemetry, server: RecordingServer
) -> None:
    with (
        telemetry.tracer.start_as_current_span("parent") as parent,
        smtplib.SMTP("127.0.0.1", server.port) as client,
    ):
        result = client.sendmail("a@example.com", ["b@example.com"], RAW)

    assert result == {}
    span = telemetry.one_span("smtp send")
    assert span.kind is SpanKind.CLIENT
    assert span.parent is not None
    assert span.parent.span_id == parent.get_span_context().span_id
    received = server.messages[0].content
    line, rest = strip_traceparent(received)
    assert rest == RAW
    match = TRACEPARENT_LINE.match(line)
    assert match is not None
    assert match.group(1).decode() == format(span.context.trace_id, "032x")
    assert match.group(2).decode() == format(span.context.span_id, "016x")

    attributes = dict(span.attributes or {})
    assert attributes["server.address"] == "127.0.0.1"
    assert attributes["server.port"] == server.port
    assert attributes["network.peer.address"] == "127.0.0.1"
    assert attributes["network.peer.port"] == server.port
    assert attributes["network.transport"] == "tcp"
    assert attributes["network.protocol.name"] == "smtp"
    assert attributes["messaging.system"] == "smtp"
    assert attributes["messaging.operation.name"] == "send"
    assert attributes["messaging.operation.type"] == "send"
    assert attributes["messaging.message.id"] == "<m1@example.com>"
    assert attributes["smtp.response.status_code"] == 250
    assert attributes["smtp.response.enhanced_status_code"] == "2.0.0"
    assert attributes["smtp.response.message"] == "2.0.0 Ok: queued as 4Xb1Kq0cZ5z9v"
    assert attributes["smtp.queue_id"] == "4Xb1Kq0cZ5z9v"
    assert attributes["smtp.recipients.count"] == 1
    assert "smtp.recipients.rejected.count" not in attributes
    assert attributes["smtp.message.size"] == len(received)
    assert attributes["smtp.trace_context.injected"] is True
    assert "smtp.envelope.from" not in attributes
    assert "smtp.envelope.to" not in attributes
    assert span.status.status_code is StatusCode.UNSET


def test_wire_bytes_and_size_option(
    instrument: SmtpInstrumentor, telemetry: Telemetry, server: RecordingServer
) -> None:
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.sendmail("a@example.com", ["b@example.com"], RAW)
    wire = server.wire_bytes()
    data = server.data_sections()[0]
    line, rest = strip_traceparent(data)
    # Dot-stuffing still applies to the original lines, and nothing else changed.
    assert rest == RAW.replace(b"\r\n.dot", b"\r\n..dot") + b".\r\n"
    assert f"size={len(line) + len(RAW)}".encode() in wire


def test_send_message_leaves_message_untouched(
    instrument: SmtpInstrumentor, telemetry: Telemetry, server: RecordingServer
) -> None:
    message = make_message()
    before = message.items()
    before_bytes = message.as_bytes()
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        result = client.send_message(message)
    assert result == {}
    assert message.items() == before
    assert message.as_bytes() == before_bytes
    assert "traceparent" not in message
    _, rest = strip_traceparent(server.messages[0].content)
    assert b"Subject: Test\r\n" in rest
    assert len(telemetry.spans("smtp send")) == 1


def test_lf_only_bytes_keep_lf(
    instrument: SmtpInstrumentor, telemetry: Telemetry, server: RecordingServer
) -> None:
    payload = b"Subject: lf\n\nbody\n"
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.sendmail("a@example.com", ["b@example.com"], payload)
    data = server.data_sections()[0]
    pattern = rb"traceparent: 00-[0-9a-f]{32}-[0-9a-f]{16}-0[0-3]\nSubject: lf\n\nbody\n\r\n\.\r\n"
    assert re.fullmatch(pattern, data)


def test_str_payload_stays_str(
    instrument: SmtpInstrumentor,
    telemetry: Telemetry,
    server: RecordingServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # smtplib converts only str payloads with _fix_eols, so seeing it called proves that
    # the payload reached smtplib as a str.
    seen: list[object] = []
    fix_eols = smtplib._fix_eols  # type: ignore[attr-defined]

    def recording_fix_eols(data: str) -> str:
        seen.append(data)
        return fix_eols(data)  # type: ignore[no-any-return]

    monkeypatch.setattr(smtplib, "_fix_eols", recording_fix_eols)
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.sendmail("a@example.com", ["b@example.com"], "Subject: s\n\nbody\n")
    assert len(seen) == 1
    assert isinstance(seen[0], str)
    assert re.fullmatch(
        r"traceparent: 00-[0-9a-f]{32}-[0-9a-f]{16}-0[0-3]\nSubject: s\n\nbody\n", seen[0]
    )
    assert len(telemetry.spans("smtp send")) == 1


def test_many_messages_one_connection(
    instrument: SmtpInstrumentor, telemetry: Telemetry, server: RecordingServer
) -> None:
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        for index in range(5):
            client.sendmail("a@example.com", ["b@example.com"], f"Subject: {index}\r\n\r\nx\r\n")
    spans = telemetry.spans("smtp send")
    assert len(spans) == 5
    span_ids = {format(s.context.span_id, "016x") for s in spans}
    seen = set()
    for received in server.messages:
        match = TRACEPARENT_LINE.match(received.content)
        assert match
        seen.add(match.group(2).decode())
        assert received.content.count(b"traceparent") == 1
    assert seen == span_ids


@pytest.mark.parametrize(
    ("reply", "queue_id"),
    [
        (POSTFIX_QUEUED, "4Xb1Kq0cZ5z9v"),
        (SENDMAIL_QUEUED, "4B3Jx1aB012345"),
        (EXIM_QUEUED, "1t2AbC-000Xyz-9Q"),
        ("250 OK", None),
    ],
)
def test_queue_id_per_mta(
    instrument: SmtpInstrumentor,
    telemetry: Telemetry,
    server: RecordingServer,
    reply: str,
    queue_id: str | None,
) -> None:
    server.script.data_reply = reply
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.sendmail("a@example.com", ["b@example.com"], RAW)
    attributes = dict(telemetry.one_span("smtp send").attributes or {})
    assert attributes.get("smtp.queue_id") == queue_id


def test_partial_refusal_is_not_error(
    instrument: SmtpInstrumentor, telemetry: Telemetry, server: RecordingServer
) -> None:
    server.script.rcpt_replies["bad@example.com"] = "550 5.1.1 <bad@example.com>: User unknown"
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        result = client.sendmail("a@example.com", ["good@example.com", "bad@example.com"], RAW)
    assert result == {"bad@example.com": (550, b"5.1.1 <bad@example.com>: User unknown")}
    span = telemetry.one_span("smtp send")
    attributes = dict(span.attributes or {})
    assert span.status.status_code is StatusCode.UNSET
    assert attributes["smtp.recipients.count"] == 2
    assert attributes["smtp.recipients.rejected.count"] == 1
    assert attributes["smtp.response.status_code"] == 250
    events = [e for e in span.events if e.name == "smtp.recipient.refused"]
    assert len(events) == 1
    event = dict(events[0].attributes or {})
    assert event["smtp.response.status_code"] == 550
    assert event["smtp.response.enhanced_status_code"] == "5.1.1"
    assert event["smtp.response.message"] == "5.1.1 <redacted>: User unknown"
    assert "smtp.recipient.address" not in event


def test_all_refused_raises_same_exception(
    instrument: SmtpInstrumentor, telemetry: Telemetry, server: RecordingServer
) -> None:
    server.script.rcpt_replies["bad@example.com"] = "550 5.1.1 User unknown"
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as caught:
            client.sendmail("a@example.com", ["bad@example.com"], RAW)
        assert caught.value.recipients == {"bad@example.com": (550, b"5.1.1 User unknown")}
        # The connection still works after the refused transaction.
        assert client.sendmail("a@example.com", ["ok@example.com"], RAW) == {}
    spans = telemetry.spans("smtp send")
    failed = spans[0]
    attributes = dict(failed.attributes or {})
    assert failed.status.status_code is StatusCode.ERROR
    assert attributes["error.type"] == "550"
    assert attributes["smtp.response.status_code"] == 550
    assert attributes["smtp.recipients.rejected.count"] == 1
    assert spans[1].status.status_code is StatusCode.UNSET


@pytest.mark.parametrize(
    ("stage", "exception", "code"),
    [
        ("MAIL", smtplib.SMTPSenderRefused, 553),
        ("DATA", smtplib.SMTPDataError, 554),
        ("DATA4", smtplib.SMTPDataError, 451),
    ],
)
def test_refusals_set_error_type(
    instrument: SmtpInstrumentor,
    telemetry: Telemetry,
    server: RecordingServer,
    stage: str,
    exception: type[Exception],
    code: int,
) -> None:
    if stage == "MAIL":
        server.script.mail_reply = f"{code} 5.7.1 Sender <a@example.com> rejected"
    else:
        server.script.data_reply = f"{code} {'5.7.1' if code >= 500 else '4.3.0'} Try later"
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        with pytest.raises(exception) as caught:
            client.sendmail("a@example.com", ["b@example.com"], RAW)
    assert caught.value.smtp_code == code  # type: ignore[attr-defined]
    span = telemetry.one_span("smtp send")
    attributes = dict(span.attributes or {})
    assert span.status.status_code is StatusCode.ERROR
    assert attributes["error.type"] == str(code)
    assert attributes["smtp.response.status_code"] == code
    assert "a@example.com" not in str(attributes)
    assert "a@example.com" not in (span.status.description or "")


def test_disconnect_sets_exception_type(
    instrument: SmtpInstrumentor, telemetry: Telemetry, server: RecordingServer
) -> None:
    server.script.disconnect_at = "DATA"
    client = smtplib.SMTP("127.0.0.1", server.port)
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.sendmail("a@example.com", ["b@example.com"], RAW)
    span = telemetry.one_span("smtp send")
    assert span.status.status_code is StatusCode.ERROR
    assert dict(span.attributes or {})["error.type"] == "smtplib.SMTPServerDisconnected"


def test_capture_addresses_opt_in(telemetry: Telemetry, server: RecordingServer) -> None:
    instrumentor = SmtpInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.tracer_provider, capture_addresses=True)
    try:
        server.script.rcpt_replies["bad@example.com"] = "550 5.1.1 <bad@example.com> unknown"
        with smtplib.SMTP("127.0.0.1", server.port) as client:
            client.sendmail("a@example.com", ["b@example.com", "bad@example.com"], RAW)
    finally:
        instrumentor.uninstrument()
    span = telemetry.one_span("smtp send")
    attributes = dict(span.attributes or {})
    assert attributes["smtp.envelope.from"] == "a@example.com"
    assert tuple(attributes["smtp.envelope.to"]) == ("b@example.com", "bad@example.com")  # type: ignore[arg-type]
    event = dict(span.events[0].attributes or {})
    assert event["smtp.recipient.address"] == "bad@example.com"
    assert event["smtp.response.message"] == "5.1.1 <bad@example.com> unknown"


def test_hand_driven_transaction(
    instrument: SmtpInstrumentor, telemetry: Telemetry, server: RecordingServer
) -> None:
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.ehlo()
        assert client.mail("a@example.com", [f"SIZE={len(RAW)}"])[0] == 250
        assert client.rcpt("b@example.com")[0] == 250
        code, _reply = client.data(RAW)
    assert code == 250
    span = telemetry.one_span("smtp send")
    attributes = dict(span.attributes or {})
    assert attributes["smtp.queue_id"] == "4Xb1Kq0cZ5z9v"
    assert attributes["smtp.recipients.count"] == 1
    line, rest = strip_traceparent(server.messages[0].content)
    assert rest == RAW
    # The SIZE= declared at MAIL grows by the inserted line.
    assert server.messages[0].mail_options == [f"SIZE={len(RAW) + len(line)}"]


def test_hand_driven_rset_aborts(
    instrument: SmtpInstrumentor, telemetry: Telemetry, server: RecordingServer
) -> None:
    server.script.rcpt_replies["bad@example.com"] = "550 5.1.1 User unknown"
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.ehlo()
        client.mail("a@example.com")
        assert client.rcpt("bad@example.com")[0] == 550
        client.rset()
    span = telemetry.one_span("smtp send")
    assert span.status.status_code is StatusCode.ERROR
    assert dict(span.attributes or {})["error.type"] == "550"
    assert not server.messages


def test_hand_driven_quit_without_data(
    instrument: SmtpInstrumentor, telemetry: Telemetry, server: RecordingServer
) -> None:
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.ehlo()
        client.mail("a@example.com")
        client.rcpt("b@example.com")
    span = telemetry.one_span("smtp send")
    assert span.status.status_code is StatusCode.ERROR
    assert dict(span.attributes or {})["error.type"] == "smtp.transaction_aborted"


def test_subclass_super_gives_one_span(
    instrument: SmtpInstrumentor, telemetry: Telemetry, server: RecordingServer
) -> None:
    class Custom(smtplib.SMTP):
        def sendmail(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            return super().sendmail(*args, **kwargs)

        def send_message(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            return super().send_message(*args, **kwargs)

        def data(self, msg):  # type: ignore[no-untyped-def]
            return super().data(msg)

    with Custom("127.0.0.1", server.port) as client:
        client.send_message(make_message())
    assert len(telemetry.spans("smtp send")) == 1
    assert server.messages[0].content.lower().count(b"traceparent") == 1


def test_existing_traceparent_kept_and_linked(
    instrument: SmtpInstrumentor, telemetry: Telemetry, server: RecordingServer
) -> None:
    existing = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    message = make_message()
    message["TraceParent"] = existing
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.send_message(message)
    content = server.messages[0].content
    assert content.lower().count(b"traceparent") == 1
    assert f"TraceParent: {existing}".encode() in content
    span = telemetry.one_span("smtp send")
    assert dict(span.attributes or {})["smtp.trace_context.injected"] is False
    assert len(span.links) == 1
    assert format(span.links[0].context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert format(span.links[0].context.span_id, "016x") == "b7ad6b7169203331"


def test_invalid_existing_traceparent_not_linked(
    instrument: SmtpInstrumentor, telemetry: Telemetry, server: RecordingServer
) -> None:
    payload = b"traceparent: 00-00000000000000000000000000000000-b7ad6b7169203331-01\r\nSubject: x\r\n\r\nb\r\n"
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.sendmail("a@example.com", ["b@example.com"], payload)
    assert server.messages[0].content == payload
    assert telemetry.one_span("smtp send").links == ()


def test_lmtp_over_unix_socket(
    instrument: SmtpInstrumentor, telemetry: Telemetry, tmp_path: pytest.TempPathFactory
) -> None:
    path = f"{tmp_path}/lmtp.sock"
    lmtp = RecordingServer(lmtp=True, unix_path=path).start()
    try:
        with smtplib.LMTP(path) as client:
            client.sendmail("a@example.com", ["b@example.com"], RAW)
    finally:
        lmtp.stop()
    span = telemetry.one_span("lmtp send")
    attributes = dict(span.attributes or {})
    assert attributes["network.protocol.name"] == "lmtp"
    assert attributes["network.transport"] == "unix"
    assert attributes["server.address"] == path
    assert "server.port" not in attributes
    strip_traceparent(lmtp.messages[0].content)
    connect = telemetry.one_span("lmtp connect")
    assert dict(connect.attributes or {})["network.transport"] == "unix"


def test_lmtp_over_tcp(instrument: SmtpInstrumentor, telemetry: Telemetry) -> None:
    lmtp = RecordingServer(lmtp=True).start()
    try:
        with smtplib.LMTP("127.0.0.1", lmtp.port) as client:
            client.sendmail("a@example.com", ["b@example.com"], RAW)
    finally:
        lmtp.stop()
    assert len(telemetry.spans("lmtp connect")) == 1
    attributes = dict(telemetry.one_span("lmtp send").attributes or {})
    assert attributes["network.transport"] == "tcp"
    assert attributes["server.port"] == lmtp.port


def test_suppressed_instrumentation(
    instrument: SmtpInstrumentor, telemetry: Telemetry, server: RecordingServer
) -> None:
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    with suppress_instrumentation(), smtplib.SMTP("127.0.0.1", server.port) as client:
        client.sendmail("a@example.com", ["b@example.com"], RAW)
    assert server.messages[0].content == RAW
    assert telemetry.spans() == []


def test_propagate_false(telemetry: Telemetry, server: RecordingServer) -> None:
    instrumentor = SmtpInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.tracer_provider, propagate=False)
    try:
        with smtplib.SMTP("127.0.0.1", server.port) as client:
            client.sendmail("a@example.com", ["b@example.com"], RAW)
    finally:
        instrumentor.uninstrument()
    assert server.messages[0].content == RAW
    span = telemetry.one_span("smtp send")
    assert dict(span.attributes or {})["smtp.trace_context.injected"] is False
