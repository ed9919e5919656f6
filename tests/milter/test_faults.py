"""Faults end one MTA connection cleanly; shutdown lets messages in progress finish."""

from __future__ import annotations

import asyncio
import logging
import struct

import pytest
from opentelemetry.trace import StatusCode

from opentelemetry_instrumentation_smtp.milter import MilterConfig
from tests.conftest import Telemetry

from .conftest import StartMilter
from .driver import MtaDriver, frame, strings

SERVER_LOGGER = "opentelemetry_instrumentation_smtp.milter.server"


def server_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == SERVER_LOGGER and r.levelno >= logging.WARNING
    ]


async def start_message(driver: MtaDriver) -> None:
    await driver.mail("<a@example.com>")
    await driver.rcpt("<b@example.org>")
    await driver.data(macros={"i": "QFAULT"})
    await driver.header("Subject", " hi")
    await driver.writer.drain()


@pytest.mark.parametrize(
    ("data", "log_line"),
    [
        (frame(b"Z"), "protocol error: unknown command code b'Z'"),
        (b"\0\0\0\0", "protocol error: frame of length 0 has no command code"),
        (
            struct.pack(">I", 0x7FFF_FFFF) + b"B",
            "protocol error: frame of 2147483647 bytes exceeds the limit",
        ),
        (frame(b"L", strings("only-name")), "protocol error: HEADER has 1 string instead of 2"),
    ],
    ids=["unknown-command", "empty-frame", "oversized", "malformed"],
)
async def test_bad_frame_closes_only_that_connection(
    start_milter: StartMilter,
    telemetry: Telemetry,
    caplog: pytest.LogCaptureFixture,
    data: bytes,
    log_line: str,
) -> None:
    server = await start_milter()
    healthy = await MtaDriver.open(server.address)
    await healthy.start_session()
    broken = await MtaDriver.open(server.address)
    await broken.start_session()
    await start_message(broken)

    broken.writer.write(data)
    await broken.writer.drain()
    assert await broken.closed_by_milter()

    _, reply = await healthy.send_message([], queue_id="QHEALTHY")
    await healthy.quit()
    assert reply.code == b"c"
    (warning,) = server_warnings(caplog)
    assert warning.startswith("closing MTA connection 127.0.0.1:")
    assert log_line in warning
    failed, ok = telemetry.spans("smtp receive")
    assert failed.attributes["error.type"] == "protocol_error"
    assert failed.attributes["smtp.queue_id"] == "QFAULT"
    assert failed.status.status_code is StatusCode.ERROR
    assert ok.attributes["smtp.queue_id"] == "QHEALTHY"


async def test_disconnect_mid_message(
    start_milter: StartMilter, telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_milter()
    driver = await MtaDriver.open(server.address)
    await driver.start_session()
    await start_message(driver)
    await driver.close()
    await server.close()
    (warning,) = server_warnings(caplog)
    assert warning.endswith("closed inside a message")
    span = telemetry.one_span("smtp receive")
    assert span.attributes["error.type"] == "disconnected"


async def test_truncated_frame_at_disconnect(
    start_milter: StartMilter, telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_milter()
    driver = await MtaDriver.open(server.address)
    await driver.start_session()
    await start_message(driver)
    driver.writer.write(frame(b"L", strings("X-A", "b"))[:-3])
    await driver.close()
    await server.close()
    (warning,) = server_warnings(caplog)
    assert "protocol error: connection closed inside a frame, 8 bytes left unread" in warning
    assert telemetry.one_span("smtp receive").attributes["error.type"] == "protocol_error"


async def test_disconnect_between_messages_is_quiet(
    start_milter: StartMilter, telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_milter()
    driver = await MtaDriver.open(server.address)
    await driver.start_session()
    await driver.send_message([])
    await driver.close()
    await server.close()
    assert server_warnings(caplog) == []
    assert len(telemetry.spans("smtp receive")) == 1


async def test_stall_inside_frame_times_out(
    start_milter: StartMilter, telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_milter(MilterConfig(frame_timeout=0.2))
    driver = await MtaDriver.open(server.address)
    await driver.start_session()
    await start_message(driver)
    driver.writer.write(frame(b"L", strings("X-A", "b"))[:6])
    await driver.writer.drain()
    assert await driver.closed_by_milter()
    await server.close()
    (warning,) = server_warnings(caplog)
    assert warning.endswith("no data for 0 s inside a message")
    assert telemetry.one_span("smtp receive").attributes["error.type"] == "timeout"


async def test_idle_connection_times_out(
    start_milter: StartMilter, telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_milter(MilterConfig(idle_timeout=0.2))
    driver = await MtaDriver.open(server.address)
    await driver.start_session()
    assert await driver.closed_by_milter()
    (warning,) = server_warnings(caplog)
    assert warning.endswith("no data for 0 s")
    assert telemetry.spans("smtp receive") == []


async def test_shutdown_closes_idle_and_finishes_message_in_progress(
    start_milter: StartMilter, telemetry: Telemetry
) -> None:
    server = await start_milter()
    idle = await MtaDriver.open(server.address)
    await idle.start_session()
    busy = await MtaDriver.open(server.address)
    await busy.start_session()
    await start_message(busy)
    await asyncio.sleep(0.05)
    address = server.address

    closing = asyncio.create_task(server.close(timeout=30))
    assert await idle.closed_by_milter()
    # New connections are refused once the listener is closed.
    await asyncio.sleep(0)
    with pytest.raises(OSError):
        await MtaDriver.open(address)

    await busy.end_of_headers()
    _, reply = await busy.end_of_message()
    assert reply.code == b"c"
    assert await busy.closed_by_milter()
    await closing
    span = telemetry.one_span("smtp receive")
    assert span.attributes["smtp.queue_id"] == "QFAULT"
    assert "error.type" not in span.attributes


async def test_shutdown_deadline_aborts_message(
    start_milter: StartMilter, telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_milter()
    busy = await MtaDriver.open(server.address)
    await busy.start_session()
    await start_message(busy)
    await asyncio.sleep(0.05)
    await server.close(timeout=0.1)
    assert await busy.closed_by_milter()
    expected = (
        "shutdown deadline of 0.1 s passed: aborting 1 MTA connections, 1 of them inside a message"
    )
    assert expected in server_warnings(caplog)
    assert telemetry.one_span("smtp receive").attributes["error.type"] == "shutdown"
