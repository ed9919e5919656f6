"""aiosmtplib sends that the server refuses or breaks off: error attributes and events."""

from __future__ import annotations

import aiosmtplib
import pytest
from opentelemetry.trace import StatusCode

from opentelemetry_instrumentation_smtp import SmtpInstrumentor
from tests.aiosmtplib.support import RAW, SENDER, inserted_line, split_traceparent
from tests.conftest import Telemetry
from tests.smtpserver import RecordingServer


async def test_some_recipients_refused_is_not_error(
    instrument: SmtpInstrumentor,
    telemetry: Telemetry,
    server: RecordingServer,
    client: aiosmtplib.SMTP,
) -> None:
    server.script.rcpt_replies["bad@example.com"] = "550 5.1.1 <bad@example.com>: unknown user"
    errors, _ = await client.sendmail(SENDER, ["good@example.com", "bad@example.com"], RAW)

    assert list(errors) == ["bad@example.com"]
    span = telemetry.one_span("smtp send")
    attributes = dict(span.attributes or {})
    assert span.status.status_code is StatusCode.UNSET
    assert "error.type" not in attributes
    assert attributes["smtp.recipients.count"] == 2
    assert attributes["smtp.recipients.rejected.count"] == 1
    assert attributes["smtp.response.status_code"] == 250
    events = [event for event in span.events if event.name == "smtp.recipient.refused"]
    assert len(events) == 1
    assert dict(events[0].attributes or {}) == {
        "smtp.response.status_code": 550,
        "smtp.response.enhanced_status_code": "5.1.1",
        "smtp.response.message": "5.1.1 <redacted>: unknown user",
    }
    assert split_traceparent(server.messages[0].content)[0] == inserted_line(span)


async def test_all_recipients_refused(
    instrument: SmtpInstrumentor,
    telemetry: Telemetry,
    server: RecordingServer,
    client: aiosmtplib.SMTP,
) -> None:
    server.script.rcpt_replies["x@example.com"] = "550 5.1.1 no such user"
    server.script.rcpt_replies["y@example.com"] = "551 5.1.6 moved"

    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as raised:
        await client.sendmail(SENDER, ["x@example.com", "y@example.com"], RAW)

    span = telemetry.one_span("smtp send")
    attributes = dict(span.attributes or {})
    assert span.status.status_code is StatusCode.ERROR
    assert attributes["error.type"] == "551"
    assert attributes["smtp.response.status_code"] == 551
    assert attributes["smtp.recipients.rejected.count"] == 2
    assert len([e for e in span.events if e.name == "smtp.recipient.refused"]) == 2
    assert server.messages == []
    exception_events = [e for e in span.events if e.name == "exception"]
    assert dict(exception_events[0].attributes or {})["exception.type"] == (
        "aiosmtplib.errors.SMTPRecipientsRefused"
    )
    assert raised.value.recipients[0].code == 550


async def test_sender_refused(
    instrument: SmtpInstrumentor,
    telemetry: Telemetry,
    server: RecordingServer,
    client: aiosmtplib.SMTP,
) -> None:
    server.script.mail_reply = "553 5.7.1 sender rejected"
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as raised:
        await client.sendmail(SENDER, ["b@example.com"], RAW)

    span = telemetry.one_span("smtp send")
    attributes = dict(span.attributes or {})
    assert raised.value.code == 553
    assert attributes["error.type"] == "553"
    assert attributes["smtp.response.enhanced_status_code"] == "5.7.1"
    assert span.status.status_code is StatusCode.ERROR
    description = span.status.description or ""
    assert description.startswith("553: ")
    assert "a@example.com" not in description


@pytest.mark.parametrize("reply", ["554 5.6.0 message content rejected", "451 4.3.0 try later"])
async def test_data_refused(
    instrument: SmtpInstrumentor,
    telemetry: Telemetry,
    server: RecordingServer,
    client: aiosmtplib.SMTP,
    reply: str,
) -> None:
    server.script.data_reply = reply
    with pytest.raises(aiosmtplib.SMTPDataError):
        await client.sendmail(SENDER, ["b@example.com"], RAW)

    span = telemetry.one_span("smtp send")
    attributes = dict(span.attributes or {})
    assert attributes["error.type"] == reply[:3]
    assert attributes["smtp.response.status_code"] == int(reply[:3])
    assert attributes["smtp.response.message"] == reply[4:]
    assert "smtp.queue_id" not in attributes
    assert span.status.status_code is StatusCode.ERROR


async def test_exception_is_same_object(
    instrument: SmtpInstrumentor, server: RecordingServer, client: aiosmtplib.SMTP
) -> None:
    failure = aiosmtplib.SMTPDataError(554, "custom")

    class Failing(aiosmtplib.SMTP):
        async def data(self, message: str | bytes, /, **kwargs: object) -> aiosmtplib.SMTPResponse:
            raise failure

    failing = Failing(hostname="127.0.0.1", port=server.port, start_tls=False)
    await failing.connect()
    with pytest.raises(aiosmtplib.SMTPDataError) as raised:
        await failing.sendmail(SENDER, ["b@example.com"], RAW)
    failing.close()

    assert raised.value is failure


@pytest.mark.parametrize("stage", ["MAIL", "RCPT", "DATA"])
async def test_disconnect(
    instrument: SmtpInstrumentor,
    telemetry: Telemetry,
    server: RecordingServer,
    client: aiosmtplib.SMTP,
    stage: str,
) -> None:
    server.script.disconnect_at = stage
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await client.sendmail(SENDER, ["b@example.com"], RAW)

    span = telemetry.one_span("smtp send")
    attributes = dict(span.attributes or {})
    assert attributes["error.type"] == "aiosmtplib.errors.SMTPServerDisconnected"
    assert span.status.status_code is StatusCode.ERROR
    assert span.end_time is not None


@pytest.mark.skipif(
    not hasattr(aiosmtplib.email, "ADDRESS_INJECTION_REGEX"),
    reason="aiosmtplib before 5.1 sends such addresses without checking them",
)
async def test_invalid_sender_address(
    instrument: SmtpInstrumentor,
    telemetry: Telemetry,
    server: RecordingServer,
    client: aiosmtplib.SMTP,
) -> None:
    with pytest.raises(ValueError):
        await client.sendmail("a b@example.com", ["b@example.com"], RAW)

    attributes = dict(telemetry.one_span("smtp send").attributes or {})
    assert attributes["error.type"] == "ValueError"
    assert server.messages == []
