"""Lifecycle edge cases shared by both adapters: iterators, lost connections, stale wrappers."""

from __future__ import annotations

import smtplib

import aiosmtplib
import pytest
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.trace import StatusCode

from opentelemetry_instrumentation_smtp import SmtpInstrumentor
from tests.conftest import Telemetry
from tests.smtpserver import RecordingServer

RAW = b"Subject: edge\r\n\r\nbody\r\n"


def test_smtplib_generator_options_as_untraced(
    instrument: SmtpInstrumentor, telemetry: Telemetry, server: RecordingServer
) -> None:
    # smtplib's mail() itself iterates its options twice, so a generator loses its items
    # even without instrumentation; traced, the server must see exactly the same.
    for suppressed in (True, False):
        with smtplib.SMTP("127.0.0.1", server.port) as client:
            client.ehlo()
            options = (option for option in ["BODY=8BITMIME", "SMTPUTF8"])
            if suppressed:
                with suppress_instrumentation():
                    client.mail("a@example.com", options)
            else:
                client.mail("a@example.com", options)
            client.rcpt("b@example.com")
            client.data(RAW)
    assert server.messages[1].mail_options == server.messages[0].mail_options


async def test_aiosmtplib_generator_options_reach_server(
    instrument: SmtpInstrumentor, telemetry: Telemetry, server: RecordingServer
) -> None:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port, start_tls=False)
    await client.connect()
    await client.mail("a@example.com", options=(o for o in ["BODY=8BITMIME"]))
    await client.rcpt("b@example.com")
    await client.data(RAW)
    await client.quit()
    assert server.messages[0].mail_options == ["BODY=8BITMIME"]


@pytest.mark.parametrize("stage", ["RCPT", "DATA"])
async def test_aiosmtplib_hand_driven_disconnect_recorded(
    instrument: SmtpInstrumentor, telemetry: Telemetry, server: RecordingServer, stage: str
) -> None:
    server.script.disconnect_at = stage
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port, start_tls=False)
    await client.connect()
    await client.mail("a@example.com")
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await client.rcpt("b@example.com")
        await client.data(RAW)
    span = telemetry.one_span("smtp send")
    attributes = dict(span.attributes or {})
    assert span.status.status_code is StatusCode.ERROR
    assert attributes["error.type"] == "aiosmtplib.errors.SMTPServerDisconnected"
    assert [event.name for event in span.events][-1] == "exception"


def test_method_bound_before_uninstrument_is_untraced(
    telemetry: Telemetry, server: RecordingServer
) -> None:
    instrumentor = SmtpInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.tracer_provider)
    client = smtplib.SMTP("127.0.0.1", server.port)
    bound_sendmail = client.sendmail
    instrumentor.uninstrument()
    telemetry.exporter.clear()
    bound_sendmail("a@example.com", ["b@example.com"], RAW)
    client.quit()
    assert server.messages[0].content == RAW
    assert telemetry.spans() == []
