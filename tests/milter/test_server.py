"""The milter server driven over a real socket by the in-repo MTA driver."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from opentelemetry_instrumentation_smtp.milter import MilterConfig
from tests.conftest import Telemetry

from .conftest import StartMilter
from .driver import POSTFIX_CONNECT_MACROS, MtaDriver, frame, macro_frame, strings

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


def metric_points(telemetry: Telemetry, name: str) -> list[Any]:
    data = telemetry.metric_reader.get_metrics_data()
    points: list[Any] = []
    if data is None:
        return points
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name == name:
                    points.extend(metric.data.data_points)
    return points


async def open_session(milter_address: Any) -> MtaDriver:
    driver = await MtaDriver.open(milter_address)
    await driver.start_session()
    return driver


async def test_span_of_one_message(start_milter: StartMilter, telemetry: Telemetry) -> None:
    server = await start_milter()
    driver = await open_session(server.address)
    headers = [
        ("From", "a@example.com"),
        ("traceparent", TRACEPARENT),
        ("Message-ID", "<m1@example.com>"),
    ]
    modifications, reply = await driver.send_message(headers, b"Hello.\r\n", queue_id="4QID1")
    await driver.quit()

    assert modifications == []
    assert reply.code == b"c"
    span = telemetry.one_span("smtp receive")
    assert span.kind is SpanKind.SERVER
    assert span.context is not None and span.parent is not None
    assert f"{span.context.trace_id:032x}" == TRACE_ID
    assert f"{span.parent.span_id:016x}" == PARENT_ID
    assert span.parent.is_remote
    assert dict(span.attributes or {}) == {
        "messaging.system": "smtp",
        "messaging.operation.type": "receive",
        "smtp.recipients.count": 1,
        "smtp.trace_context": "present",
        # "From: a@example.com\r\n" 21 + traceparent line 70 + "Message-ID: <m1@example.com>\r\n"
        # 30 + blank line 2 + body 8.
        "smtp.message.size": 131,
        "client.address": "192.0.2.10",
        "client.port": 54321,
        "server.address": "mta.example.test",
        "smtp.mta.name": "Postfix",
        "smtp.mta.version": "3.7.11",
        "smtp.helo": "client.example.test",
        "smtp.queue_id": "4QID1",
        "messaging.message.id": "<m1@example.com>",
    }
    names = [event.name for event in span.events]
    assert names == [
        "smtp.connect",
        "smtp.helo",
        "smtp.mail",
        "smtp.rcpt",
        "smtp.data",
        "smtp.end_of_headers",
        "smtp.end_of_message",
    ]
    timestamps = [event.timestamp for event in span.events]
    assert timestamps == sorted(timestamps)
    assert span.start_time == span.events[2].timestamp
    assert span.end_time == span.events[-1].timestamp
    assert all(not event.attributes for event in span.events)
    assert span.status.status_code is StatusCode.UNSET


async def test_many_messages_per_connection(
    start_milter: StartMilter, telemetry: Telemetry
) -> None:
    server = await start_milter()
    driver = await open_session(server.address)
    for number in range(5):
        await driver.send_message(
            [("Message-ID", f"<m{number}@example.com>")],
            recipients=[f"<r{index}@example.org>" for index in range(number + 1)],
            queue_id=f"QID{number}",
        )
    await driver.quit()

    spans = telemetry.spans("smtp receive")
    assert [span.attributes["smtp.queue_id"] for span in spans] == [f"QID{n}" for n in range(5)]
    assert [span.attributes["messaging.message.id"] for span in spans] == [
        f"<m{n}@example.com>" for n in range(5)
    ]
    assert [span.attributes["smtp.recipients.count"] for span in spans] == [1, 2, 3, 4, 5]
    assert len({span.context.trace_id for span in spans if span.context}) == 5
    assert all(span.attributes["smtp.trace_context"] == "absent" for span in spans)


async def test_abort_mid_message_keeps_connection_state(
    start_milter: StartMilter, telemetry: Telemetry
) -> None:
    server = await start_milter()
    driver = await open_session(server.address)
    # Aborted before DATA: no span.
    await driver.mail("<a@example.com>")
    await driver.rcpt("<b@example.org>")
    await driver.rcpt("<c@example.org>", macros={"i": "ABORTED1"})
    await driver.abort()
    # Aborted after the headers: an error span with what was known.
    await driver.mail("<a@example.com>")
    await driver.rcpt("<b@example.org>")
    await driver.data(macros={"i": "ABORTED2"})
    await driver.header("traceparent", " " + TRACEPARENT)
    await driver.abort()
    # The next message carries no queue id macro at all, so none may leak into it.
    await driver.mail("<a@example.com>")
    await driver.rcpt("<b@example.org>")
    await driver.data()
    await driver.end_of_headers()
    await driver.end_of_message()
    await driver.quit()

    aborted, complete = telemetry.spans("smtp receive")
    assert aborted.attributes["error.type"] == "aborted"
    assert aborted.attributes["smtp.queue_id"] == "ABORTED2"
    assert aborted.status.status_code is StatusCode.ERROR
    assert aborted.parent is not None and f"{aborted.parent.span_id:016x}" == PARENT_ID
    assert "smtp.queue_id" not in complete.attributes
    assert "error.type" not in complete.attributes
    # Connection macros and CONNECT data survive ABORT.
    assert complete.attributes["server.address"] == "mta.example.test"
    assert complete.attributes["client.address"] == "192.0.2.10"
    assert complete.attributes["smtp.helo"] == "client.example.test"


@pytest.mark.parametrize("stage", ["rcpt", "data", "end_of_headers", "end_of_message"])
async def test_queue_id_macro_at_each_stage(
    start_milter: StartMilter, telemetry: Telemetry, stage: str
) -> None:
    server = await start_milter()
    driver = await open_session(server.address)
    macros = {
        name: ({"i": "QSTAGE"} if name == stage else None)
        for name in ("rcpt", "data", "end_of_headers", "end_of_message")
    }
    await driver.mail("<a@example.com>")
    await driver.rcpt("<b@example.org>", macros=macros["rcpt"])
    await driver.data(macros=macros["data"])
    await driver.end_of_headers(macros=macros["end_of_headers"])
    await driver.end_of_message(macros=macros["end_of_message"])
    await driver.quit()
    assert telemetry.one_span("smtp receive").attributes["smtp.queue_id"] == "QSTAGE"


async def test_client_from_macros_when_connect_has_no_address(
    start_milter: StartMilter, telemetry: Telemetry
) -> None:
    server = await start_milter()
    driver = await MtaDriver.open(server.address)
    await driver.negotiate()
    await driver.command(b"C", strings("unknown") + b"U", POSTFIX_CONNECT_MACROS)
    await driver.send_message([])
    await driver.quit()
    attributes = telemetry.one_span("smtp receive").attributes
    assert attributes["client.address"] == "192.0.2.10"
    assert attributes["client.port"] == 54321
    assert "smtp.helo" not in attributes


async def test_mta_without_no_reply_flags_gets_continue(
    start_milter: StartMilter, telemetry: Telemetry
) -> None:
    server = await start_milter()
    driver = await MtaDriver.open(server.address)
    negotiated = await driver.negotiate(version=2, actions=0x3F, protocol=0x7F)
    assert (negotiated.version, negotiated.actions, negotiated.protocol) == (2, 0, 0)
    assert negotiated.symbol_lists == {}
    await driver.connect(macros=POSTFIX_CONNECT_MACROS)
    await driver.helo()
    # The driver asserts a CONTINUE after every command that is not exempt.
    await driver.send_message([("Subject", "hi")])
    await driver.quit()
    # Without the leading-space flag the MTA drops the space after the colon, so the size
    # counts it back: "Subject: hi\r\n" 13 + blank line 2 + body 8.
    assert telemetry.one_span("smtp receive").attributes["smtp.message.size"] == 23


async def test_unix_socket(start_milter: StartMilter, telemetry: Telemetry, tmp_path: Any) -> None:
    path = tmp_path / "milter.sock"
    server = await start_milter(listen=[f"unix:{path}"])
    assert server.address == str(path)
    assert (path.stat().st_mode & 0o777) == 0o660
    driver = await open_session(str(path))
    await driver.send_message([])
    await driver.quit()
    assert len(telemetry.spans("smtp receive")) == 1
    await server.close()
    assert not path.exists()


async def test_metrics(start_milter: StartMilter, telemetry: Telemetry) -> None:
    server = await start_milter()
    driver = await open_session(server.address)
    await driver.send_message([("traceparent", TRACEPARENT)])
    await driver.send_message([])
    await driver.send_message([("traceparent", "00-bad")])
    open_points = metric_points(telemetry, "smtp.milter.connections")
    assert [point.value for point in open_points] == [1]
    await driver.quit()
    await server.close()

    counts = {
        point.attributes["smtp.trace_context"]: point.value
        for point in metric_points(telemetry, "smtp.milter.messages")
    }
    assert counts == {"present": 1, "absent": 1, "invalid": 1}
    durations = metric_points(telemetry, "smtp.milter.message.duration")
    assert sum(point.count for point in durations) == 3
    assert [point.value for point in metric_points(telemetry, "smtp.milter.connections")] == [0]


async def test_message_done_callback(start_milter: StartMilter, telemetry: Telemetry) -> None:
    calls: list[tuple[str, Any]] = []
    server = await start_milter(
        on_message_done=lambda queue_id, context: calls.append((queue_id, context))
    )
    driver = await open_session(server.address)
    await driver.send_message([], queue_id="QDONE")
    # A message that never gets a queue id and one that is aborted are not reported.
    await driver.mail("<a@example.com>")
    await driver.rcpt("<b@example.org>")
    await driver.data()
    await driver.end_of_message()
    await driver.abort()
    await driver.mail("<a@example.com>")
    await driver.data(macros={"i": "QABORT"})
    await driver.abort()
    await driver.quit()
    span = telemetry.spans("smtp receive")[0]
    assert calls == [("QDONE", span.context)]


async def test_failing_callback_is_logged(
    start_milter: StartMilter, telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    def fail(queue_id: str, context: Any) -> None:
        raise RuntimeError("callback broke")

    server = await start_milter(on_message_done=fail)
    driver = await open_session(server.address)
    _, first = await driver.send_message([], queue_id="QFAIL1")
    _, second = await driver.send_message([], queue_id="QFAIL2")
    await driver.quit()
    assert (first.code, second.code) == (b"c", b"c")
    assert len(telemetry.spans("smtp receive")) == 2
    failures = [r for r in caplog.records if "on_message_done callback failed" in r.getMessage()]
    assert [r.getMessage() for r in failures] == [
        "on_message_done callback failed for queue id QFAIL1",
        "on_message_done callback failed for queue id QFAIL2",
    ]


@pytest.mark.parametrize("record_addresses", [False, True])
async def test_addresses_only_when_opted_in(
    start_milter: StartMilter,
    telemetry: Telemetry,
    caplog: pytest.LogCaptureFixture,
    record_addresses: bool,
) -> None:
    caplog.set_level(logging.INFO, logger="opentelemetry_instrumentation_smtp.milter")
    server = await start_milter(MilterConfig(record_addresses=record_addresses))
    driver = await open_session(server.address)
    await driver.send_message(
        [], sender="<alice@example.com>", recipients=["<bob@example.org>", "<carol@example.net>"]
    )
    await driver.quit()

    span = telemetry.one_span("smtp receive")
    (log_line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("message ")]
    rcpt_events = [event for event in span.events if event.name == "smtp.rcpt"]

    if record_addresses:
        assert span.attributes["smtp.envelope.from"] == "<alice@example.com>"
        assert span.attributes["smtp.envelope.to"] == ("<bob@example.org>", "<carol@example.net>")
        assert [event.attributes["smtp.recipient.address"] for event in rcpt_events] == [
            "<bob@example.org>",
            "<carol@example.net>",
        ]
        assert log_line.endswith(
            " from=<alice@example.com> to=<bob@example.org>,<carol@example.net>"
        )
    else:
        assert "smtp.envelope.from" not in span.attributes
        assert "smtp.envelope.to" not in span.attributes
        assert all(not event.attributes for event in rcpt_events)
        assert "@example" not in log_line

    context = span.context
    assert context is not None
    assert log_line.startswith(
        f"message received: queue_id=4ABC123DEF trace_id={context.trace_id:032x} "
        f"span_id={context.span_id:016x} message_id=- trace_context=absent recipients=2"
    )


async def test_first_bytes_split_across_writes(
    start_milter: StartMilter, telemetry: Telemetry
) -> None:
    server = await start_milter()
    driver = await open_session(server.address)
    data = macro_frame(b"M", {"i": "QSPLIT"}) + frame(b"M", strings("<a@b>")) + frame(b"T")
    for byte in data:
        driver.writer.write(bytes([byte]))
        await driver.writer.drain()
    await driver.end_of_headers()
    await driver.end_of_message()
    await driver.quit()
    assert telemetry.one_span("smtp receive").attributes["smtp.queue_id"] == "QSPLIT"


async def test_concurrent_connections(start_milter: StartMilter, telemetry: Telemetry) -> None:
    server = await start_milter()

    async def one_connection(number: int) -> None:
        driver = await open_session(server.address)
        for index in range(3):
            await driver.send_message([], queue_id=f"Q{number}-{index}")
            await asyncio.sleep(0)
        await driver.quit()

    await asyncio.gather(*(one_connection(number) for number in range(10)))
    queue_ids = sorted(span.attributes["smtp.queue_id"] for span in telemetry.spans("smtp receive"))
    assert queue_ids == sorted(f"Q{n}-{i}" for n in range(10) for i in range(3))
