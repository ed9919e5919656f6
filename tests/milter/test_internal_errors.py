"""Unexpected errors and the shutdown deadline end connections cleanly and are bounded."""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any

import pytest

from opentelemetry_instrumentation_smtp.milter import MilterConfig
from opentelemetry_instrumentation_smtp.milter import server as server_module
from tests.conftest import Telemetry

from .conftest import StartMilter
from .driver import MtaDriver, strings
from .test_faults import SERVER_LOGGER, start_message
from .test_server import metric_points

CONNECTIONS_METRIC = "smtp.milter.connections"


def open_connections(telemetry: Telemetry) -> int:
    (point,) = metric_points(telemetry, CONNECTIONS_METRIC)
    return int(point.value)


def records_from(caplog: pytest.LogCaptureFixture, prefix: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith(prefix)]


async def connect_without_address(driver: MtaDriver, port_macro: str) -> None:
    """Negotiate and send a CONNECT of unknown family, so the port comes from the macro."""
    await driver.negotiate()
    data = strings("client.example.test") + b"U"
    await driver.command(b"C", data, {"{client_addr}": "192.0.2.10", "{client_port}": port_macro})
    await driver.helo()


@pytest.mark.parametrize("port_macro", ["²", "١٢٣", "70000", "-1", ""])
async def test_invalid_client_port_macro_is_ignored(
    start_milter: StartMilter,
    telemetry: Telemetry,
    caplog: pytest.LogCaptureFixture,
    port_macro: str,
) -> None:
    server = await start_milter()
    driver = await MtaDriver.open(server.address)
    await connect_without_address(driver, port_macro)
    _, reply = await driver.send_message([], queue_id="QPORT")
    await driver.quit()
    await server.close(timeout=5)

    assert reply.code == b"c"
    span = telemetry.one_span("smtp receive")
    assert span.attributes["client.address"] == "192.0.2.10"
    assert "client.port" not in span.attributes
    assert "error.type" not in span.attributes
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_valid_client_port_macro_is_recorded(
    start_milter: StartMilter, telemetry: Telemetry
) -> None:
    server = await start_milter()
    driver = await MtaDriver.open(server.address)
    await connect_without_address(driver, "2525")
    await driver.send_message([], queue_id="QPORT")
    await driver.quit()
    await server.close(timeout=5)
    assert telemetry.one_span("smtp receive").attributes["client.port"] == 2525


async def test_unexpected_error_closes_connection_cleanly(
    start_milter: StartMilter,
    telemetry: Telemetry,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = await start_milter()
    telemetry_object = server.telemetry
    record = telemetry_object.record_message
    calls: list[str | None] = []

    def failing_record(*args: Any, **kwargs: Any) -> Any:
        error_type = args[5] if len(args) > 5 else kwargs.get("error_type")
        calls.append(error_type)
        if error_type is None:
            raise RuntimeError("injected failure")
        return record(*args, **kwargs)

    monkeypatch.setattr(telemetry_object, "record_message", failing_record)
    healthy = await MtaDriver.open(server.address)
    await healthy.start_session()
    broken = await MtaDriver.open(server.address)
    await broken.start_session()
    await start_message(broken)
    await broken.end_of_headers()
    broken.writer.write(struct.pack(">I", 1) + b"E")
    await broken.writer.drain()
    assert await broken.closed_by_milter()
    assert open_connections(telemetry) == 1

    await healthy.quit()
    await server.close(timeout=5)

    assert open_connections(telemetry) == 0
    assert records_from(caplog, "asyncio") == []
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].name == SERVER_LOGGER
    assert errors[0].getMessage().startswith("closing MTA connection 127.0.0.1:")
    assert "internal error: RuntimeError: injected failure" in errors[0].getMessage()
    assert errors[0].exc_info is None
    # The message in progress is recorded once more, as ended by the internal error.
    assert calls == [None, "internal_error"]
    span = telemetry.one_span("smtp receive")
    assert span.attributes["error.type"] == "internal_error"


async def test_shutdown_deadline_records_shutdown(
    start_milter: StartMilter, telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_milter()
    busy = await MtaDriver.open(server.address)
    await busy.start_session()
    await start_message(busy)
    # A second connection stalls inside a frame, outside any message.
    stalled = await MtaDriver.open(server.address)
    await stalled.start_session()
    stalled.writer.write(struct.pack(">I", 20) + b"M")
    await stalled.writer.drain()
    await asyncio.sleep(0.05)

    await server.close(timeout=0.1)

    assert await busy.closed_by_milter()
    assert await stalled.closed_by_milter()
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == SERVER_LOGGER and r.levelno >= logging.WARNING
    ]
    assert warnings == [
        "shutdown deadline of 0.1 s passed: aborting 2 MTA connections, 1 of them inside a message"
    ]
    span = telemetry.one_span("smtp receive")
    assert span.attributes["error.type"] == "shutdown"
    assert span.status.description == "message ended early: shutdown"


async def test_shutdown_wait_is_bounded(
    start_milter: StartMilter,
    telemetry: Telemetry,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(server_module, "ABORT_GRACE_SECONDS", 0.1)
    server = await start_milter(MilterConfig(shutdown_timeout=0.1))
    busy = await MtaDriver.open(server.address)
    await busy.start_session()
    await start_message(busy)
    await asyncio.sleep(0.05)
    (connection,) = server.connections
    # A connection whose close is never reported, as an unknown bug could cause.
    connection.closed = asyncio.get_running_loop().create_future()
    monkeypatch.setattr(connection, "connection_lost", lambda exc: None)

    await asyncio.wait_for(server.close(), timeout=30)

    assert server.connections == set()
    assert open_connections(telemetry) == 0
    messages = [r.getMessage() for r in caplog.records if r.name == SERVER_LOGGER]
    assert "1 MTA connections did not close 0.1 s after the abort; forgetting them" in messages
