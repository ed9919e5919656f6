"""aiosmtplib sends against a real server: spans, attributes, and the bytes on the wire."""

from __future__ import annotations

import copy
from collections.abc import Callable
from email.message import EmailMessage

import aiosmtplib
import pytest
from opentelemetry.trace import SpanKind, StatusCode

from opentelemetry_instrumentation_smtp import SmtpInstrumentor
from tests.aiosmtplib.support import (
    RAW,
    RECIPIENTS,
    SENDER,
    SIZE_COUNTS_NORMALIZED,
    connected_client,
    inserted_line,
    make_message,
    size_option,
    split_traceparent,
)
from tests.conftest import Telemetry
from tests.smtpserver import EXIM_QUEUED, POSTFIX_QUEUED, SENDMAIL_QUEUED, RecordingServer


async def test_sendmail_span_and_header(
    instrument: SmtpInstrumentor,
    telemetry: Telemetry,
    server: RecordingServer,
    client: aiosmtplib.SMTP,
) -> None:
    with telemetry.tracer.start_as_current_span("parent") as parent:
        result = await client.sendmail(SENDER, RECIPIENTS, RAW)

    assert result == ({}, "2.0.0 Ok: queued as 4Xb1Kq0cZ5z9v")
    span = telemetry.one_span("smtp send")
    assert span.kind is SpanKind.CLIENT
    assert span.parent is not None
    assert span.parent.span_id == parent.get_span_context().span_id
    assert span.status.status_code is StatusCode.UNSET
    line, rest = split_traceparent(server.messages[0].content)
    assert line == inserted_line(span)
    assert rest == RAW


async def test_sendmail_attributes(
    instrument: SmtpInstrumentor,
    telemetry: Telemetry,
    server: RecordingServer,
    client: aiosmtplib.SMTP,
) -> None:
    await client.sendmail(SENDER, ["b@example.com", "c@example.com"], RAW)

    attributes = dict(telemetry.one_span("smtp send").attributes or {})
    expected_size = len(inserted_line(telemetry.one_span("smtp send"))) + len(RAW)
    assert attributes == {
        "server.address": "127.0.0.1",
        "server.port": server.port,
        "network.peer.address": "127.0.0.1",
        "network.peer.port": server.port,
        "network.transport": "tcp",
        "network.protocol.name": "smtp",
        "messaging.system": "smtp",
        "messaging.operation.name": "send",
        "messaging.operation.type": "send",
        "messaging.message.id": "<m1@example.com>",
        "smtp.response.status_code": 250,
        "smtp.response.enhanced_status_code": "2.0.0",
        "smtp.response.message": "2.0.0 Ok: queued as 4Xb1Kq0cZ5z9v",
        "smtp.queue_id": "4Xb1Kq0cZ5z9v",
        "smtp.recipients.count": 2,
        "smtp.message.size": expected_size,
        "smtp.trace_context.injected": True,
    }


async def test_wire_bytes_equal_uninstrumented_plus_line(
    instrument_with: Callable[..., SmtpInstrumentor],
    telemetry: Telemetry,
    server: RecordingServer,
) -> None:
    payload = b"Subject: dots\r\n\r\n.leading dot\r\n..two\r\nlast line without ending"
    plain = await connected_client(server)
    await plain.sendmail(SENDER, RECIPIENTS, payload)
    await plain.quit()
    plain_data = server.data_sections()[-1]
    plain_size = size_option(server.messages[-1].mail_options)

    instrument_with()
    traced = await connected_client(server)
    await traced.sendmail(SENDER, RECIPIENTS, payload)
    await traced.quit()
    traced_data = server.data_sections()[-1]

    line = inserted_line(telemetry.one_span("smtp send"))
    assert traced_data == line + plain_data
    assert size_option(server.messages[-1].mail_options) == plain_size + len(line)


async def test_lf_only_message_gets_lf_line(
    instrument: SmtpInstrumentor, telemetry: Telemetry, server: RecordingServer
) -> None:
    seen: list[str | bytes] = []

    class Recording(aiosmtplib.SMTP):
        async def data(self, message: str | bytes, /, **kwargs: object) -> aiosmtplib.SMTPResponse:
            seen.append(message)
            return await super().data(message, **kwargs)  # type: ignore[arg-type]

    message = "Subject: lf\n\nbody\n"
    client = Recording(hostname="127.0.0.1", port=server.port, start_tls=False)
    await client.connect()
    await client.sendmail(SENDER, RECIPIENTS, message)
    await client.quit()

    span = telemetry.one_span("smtp send")
    lf_line = inserted_line(span, b"\n").decode()
    assert seen == [lf_line + message]
    # aiosmtplib itself turns the LF line endings into CRLF on the wire.
    assert server.messages[0].content == inserted_line(span) + b"Subject: lf\r\n\r\nbody\r\n"
    declared = size_option(server.messages[0].mail_options)
    if SIZE_COUNTS_NORMALIZED:
        assert declared == len(server.messages[0].content)
    else:
        assert declared == len(lf_line + message)
    assert dict(span.attributes or {})["smtp.message.size"] == len(server.messages[0].content)


async def test_str_stays_str_and_bytes_stay_bytes(
    instrument: SmtpInstrumentor, server: RecordingServer
) -> None:
    seen: list[str | bytes] = []

    class Recording(aiosmtplib.SMTP):
        async def data(self, message: str | bytes, /, **kwargs: object) -> aiosmtplib.SMTPResponse:
            seen.append(message)
            return await super().data(message, **kwargs)  # type: ignore[arg-type]

    client = Recording(hostname="127.0.0.1", port=server.port, start_tls=False)
    await client.connect()
    await client.sendmail(SENDER, RECIPIENTS, RAW.decode())
    await client.sendmail(SENDER, RECIPIENTS, RAW)
    await client.quit()

    assert [type(value) for value in seen] == [str, bytes]


async def test_send_message_leaves_message_unchanged(
    instrument: SmtpInstrumentor,
    telemetry: Telemetry,
    server: RecordingServer,
    client: aiosmtplib.SMTP,
) -> None:
    message = make_message()
    shallow = copy.copy(message)
    before = message.items()

    await client.send_message(message)

    assert message.items() == before
    assert shallow.items() == before
    assert message.get_all("traceparent") is None
    span = telemetry.one_span("smtp send")
    line, rest = split_traceparent(server.messages[0].content)
    assert line == inserted_line(span)
    assert rest.startswith(b"From: sender@example.com\r\n")
    assert dict(span.attributes or {})["messaging.message.id"] == "<abc@example.com>"


async def test_send_message_same_result_object(
    instrument: SmtpInstrumentor, server: RecordingServer, client: aiosmtplib.SMTP
) -> None:
    sentinel: tuple[dict[str, object], str] = ({}, "sentinel")

    class Fixed(aiosmtplib.SMTP):
        async def sendmail(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
            await super().sendmail(*args, **kwargs)  # type: ignore[arg-type]
            return sentinel

    fixed = Fixed(hostname="127.0.0.1", port=server.port, start_tls=False)
    await fixed.connect()
    result = await fixed.send_message(make_message())
    await fixed.quit()

    assert result is sentinel


@pytest.mark.parametrize(
    ("reply", "queue_id"),
    [
        (POSTFIX_QUEUED, "4Xb1Kq0cZ5z9v"),
        (SENDMAIL_QUEUED, "4B3Jx1aB012345"),
        (EXIM_QUEUED, "1t2AbC-000Xyz-9Q"),
    ],
)
async def test_queue_id_per_mta(
    instrument: SmtpInstrumentor,
    telemetry: Telemetry,
    server: RecordingServer,
    client: aiosmtplib.SMTP,
    reply: str,
    queue_id: str,
) -> None:
    server.script.data_reply = reply
    await client.sendmail(SENDER, RECIPIENTS, RAW)
    assert dict(telemetry.one_span("smtp send").attributes or {})["smtp.queue_id"] == queue_id


async def test_unrecognised_reply_has_no_queue_id(
    instrument: SmtpInstrumentor,
    telemetry: Telemetry,
    server: RecordingServer,
    client: aiosmtplib.SMTP,
) -> None:
    server.script.data_reply = "250 Accepted"
    await client.sendmail(SENDER, RECIPIENTS, RAW)
    attributes = dict(telemetry.one_span("smtp send").attributes or {})
    assert "smtp.queue_id" not in attributes
    assert attributes["smtp.response.message"] == "Accepted"


async def test_many_messages_one_connection(
    instrument: SmtpInstrumentor,
    telemetry: Telemetry,
    server: RecordingServer,
    client: aiosmtplib.SMTP,
) -> None:
    for _ in range(3):
        await client.sendmail(SENDER, RECIPIENTS, RAW)
    await client.send_message(make_message())

    spans = telemetry.spans("smtp send")
    assert len(spans) == 4
    lines = [split_traceparent(message.content)[0] for message in server.messages]
    assert lines == [inserted_line(span) for span in spans]
    assert len({span.context.span_id for span in spans if span.context}) == 4


async def test_capture_addresses(
    instrument_with: Callable[..., SmtpInstrumentor],
    telemetry: Telemetry,
    server: RecordingServer,
) -> None:
    instrument_with(capture_addresses=True)
    client = await connected_client(server)
    await client.sendmail(SENDER, ["b@example.com", "c@example.com"], RAW)
    await client.quit()

    attributes = dict(telemetry.one_span("smtp send").attributes or {})
    assert attributes["smtp.envelope.from"] == SENDER
    assert attributes["smtp.envelope.to"] == ("b@example.com", "c@example.com")


async def test_no_addresses_by_default(
    instrument: SmtpInstrumentor,
    telemetry: Telemetry,
    server: RecordingServer,
    client: aiosmtplib.SMTP,
) -> None:
    server.script.data_reply = "250 2.0.0 accepted for <b@example.com>"
    await client.sendmail(SENDER, RECIPIENTS, RAW)

    attributes = dict(telemetry.one_span("smtp send").attributes or {})
    assert "smtp.envelope.from" not in attributes
    assert "smtp.envelope.to" not in attributes
    assert attributes["smtp.response.message"] == "2.0.0 accepted for <redacted>"


async def test_hooks_receive_call_values(
    instrument_with: Callable[..., SmtpInstrumentor],
    telemetry: Telemetry,
    server: RecordingServer,
) -> None:
    requests: list[tuple[object, ...]] = []
    responses: list[tuple[object, ...]] = []
    instrument_with(
        request_hook=lambda span, client, sender, to, message: requests.append(
            (client, sender, to, message)
        ),
        response_hook=lambda span, client, result: responses.append((client, result)),
    )
    client = await connected_client(server)
    message = make_message()
    result = await client.send_message(message, sender=SENDER, recipients=RECIPIENTS)
    await client.quit()

    assert requests == [(client, SENDER, RECIPIENTS, message)]
    assert len(responses) == 1
    assert responses[0][0] is client
    assert responses[0][1] is result


async def test_failing_hook_does_not_break_send(
    instrument_with: Callable[..., SmtpInstrumentor],
    telemetry: Telemetry,
    server: RecordingServer,
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("hook bug")

    instrument_with(request_hook=broken, response_hook=broken)
    client = await connected_client(server)
    result = await client.sendmail(SENDER, RECIPIENTS, RAW)
    await client.quit()

    assert result[1] == "2.0.0 Ok: queued as 4Xb1Kq0cZ5z9v"
    span = telemetry.one_span("smtp send")
    assert split_traceparent(server.messages[0].content)[0] == inserted_line(span)


async def test_message_from_send_message_8bit(
    instrument: SmtpInstrumentor,
    telemetry: Telemetry,
    server: RecordingServer,
    client: aiosmtplib.SMTP,
) -> None:
    message = EmailMessage()
    message["From"] = "sender@example.com"
    message["To"] = "rcpt@example.com"
    message["Subject"] = "Grüße"
    message.set_content("Grüße aus Köln.\n", cte="8bit")

    await client.send_message(message)

    span = telemetry.one_span("smtp send")
    line, rest = split_traceparent(server.messages[0].content)
    assert line == inserted_line(span)
    assert "Grüße aus Köln.".encode() in rest
