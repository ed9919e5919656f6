"""Values that come from the SMTP client stay inside their own field and message."""

from __future__ import annotations

import logging

import pytest

from opentelemetry_instrumentation_smtp.milter import MilterConfig
from opentelemetry_instrumentation_smtp.milter.tracing import logfmt_value
from tests.conftest import Telemetry

from .conftest import StartMilter
from .test_server import open_session


def message_log_line(caplog: pytest.LogCaptureFixture) -> str:
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("message ")]
    return line


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("4ABC123DEF", "4ABC123DEF"),
        ("<a.1@example.com>", "<a.1@example.com>"),
        ("", '""'),
        ("<x@y> trace_id=bad", '"<x@y> trace_id=bad"'),
        ("a=b", '"a=b"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("line\r\nbreak\tand\x00nul", '"line\\r\\nbreak\\tand\\x00nul"'),
        ("caf\u00e9", '"caf\u00e9"'),
        ("bad\udcffbyte", '"bad\ufffdbyte"'),
        ("del\x7f", '"del\\x7f"'),
    ],
)
def test_logfmt_value(value: str, expected: str) -> None:
    assert logfmt_value(value) == expected


async def test_log_line_quotes_message_id(
    start_milter: StartMilter, telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="opentelemetry_instrumentation_smtp.milter")
    server = await start_milter()
    driver = await open_session(server.address)
    message_id = '<x@y> trace_id=00000000000000000000000000000bad queue_id=FAKE "\\'
    await driver.send_message([("Message-ID", message_id)], queue_id="QREAL")
    await driver.quit()

    context = telemetry.one_span("smtp receive").context
    assert context is not None
    assert message_log_line(caplog) == (
        f"message received: queue_id=QREAL trace_id={context.trace_id:032x} "
        f"span_id={context.span_id:016x} "
        'message_id="<x@y> trace_id=00000000000000000000000000000bad queue_id=FAKE \\"\\\\" '
        "trace_context=absent recipients=1"
    )


async def test_log_line_quotes_addresses(
    start_milter: StartMilter, telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="opentelemetry_instrumentation_smtp.milter")
    server = await start_milter(MilterConfig(record_addresses=True))
    driver = await open_session(server.address)
    await driver.send_message(
        [],
        sender='<"a b"@example.com>',
        recipients=["<c@example.org>", "<d@example.net> queue_id=FAKE"],
        queue_id="Q 1",
    )
    await driver.quit()

    line = message_log_line(caplog)
    assert line.startswith('message received: queue_id="Q 1" trace_id=')
    assert line.endswith(
        ' from="<\\"a b\\"@example.com>" to="<c@example.org>,<d@example.net> queue_id=FAKE"'
    )


async def test_recipient_event_address_is_valid_utf8(
    start_milter: StartMilter, telemetry: Telemetry
) -> None:
    server = await start_milter(MilterConfig(record_addresses=True))
    driver = await open_session(server.address)
    await driver.mail("<a@example.com>")
    await driver.command(b"R", b"<b\xff@example.org>\0")
    await driver.data(macros={"i": "QUTF8"})
    await driver.end_of_headers()
    await driver.end_of_message()
    await driver.quit()

    span = telemetry.one_span("smtp receive")
    (event,) = [event for event in span.events if event.name == "smtp.rcpt"]
    assert event.attributes is not None
    assert event.attributes["smtp.recipient.address"] == "<b\ufffd@example.org>"
    assert span.attributes["smtp.envelope.to"] == ("<b\ufffd@example.org>",)


@pytest.mark.parametrize(
    ("mail_macros", "expected_queue_id"),
    [({"{mail_addr}": "a@example.com"}, None), ({"i": "QSECOND"}, "QSECOND")],
    ids=["without-queue-id", "queue-id-with-mail"],
)
async def test_queue_id_after_mail_without_abort(
    start_milter: StartMilter,
    telemetry: Telemetry,
    mail_macros: dict[str, str],
    expected_queue_id: str | None,
) -> None:
    server = await start_milter()
    driver = await open_session(server.address)
    # The MTA drops the first transaction after DATA and sends no ABORT.
    await driver.mail("<a@example.com>")
    await driver.rcpt("<b@example.org>")
    await driver.data(macros={"i": "QFIRST"})
    await driver.mail("<a@example.com>", macros=mail_macros)
    await driver.rcpt("<b@example.org>")
    await driver.data()
    await driver.end_of_headers()
    await driver.end_of_message()
    await driver.quit()

    dropped, second = telemetry.spans("smtp receive")
    assert dropped.attributes["smtp.queue_id"] == "QFIRST"
    assert dropped.attributes["error.type"] == "aborted"
    assert second.attributes.get("smtp.queue_id") == expected_queue_id
    assert "error.type" not in second.attributes
