"""Sends that are cancelled or time out end their span and leave no state behind."""

from __future__ import annotations

import asyncio
import sys
import threading

import aiosmtplib
import pytest
from opentelemetry.trace import StatusCode

from opentelemetry_instrumentation_smtp import SmtpInstrumentor
from opentelemetry_instrumentation_smtp.invocation import active_transaction
from tests.aiosmtplib.support import (
    RAW,
    RECIPIENTS,
    SENDER,
    connected_client,
    inserted_line,
    split_traceparent,
)
from tests.conftest import Telemetry
from tests.smtpserver import RecordingServer

# aiosmtplib 5.1 drops a reply that arrives while no command waits for one. Earlier
# versions read a late reply to a cancelled DATA as the reply to the next command.
DROPS_STALE_REPLIES = hasattr(aiosmtplib.protocol.SMTPProtocol, "_set_response_exception")

CANCELLED = "asyncio.exceptions.CancelledError"


async def wait_until_data_sent(server: RecordingServer) -> None:
    """Wait until the server has received a whole message body on its last connection."""
    while not server.data_sections():
        await asyncio.sleep(0.01)


async def wait_for_reply(server: RecordingServer, count: int) -> None:
    """Wait until the server has written ``count`` replies, then let the client read them."""
    while len(server.replies) < count:
        await asyncio.sleep(0.01)
    for _ in range(3):
        await asyncio.sleep(0)


def assert_no_open_transaction(client: aiosmtplib.SMTP) -> None:
    assert active_transaction(client) is None
    assert getattr(client, "_opentelemetry_smtp_open_transaction", None) is None


async def test_cancel_in_middle_of_data(
    instrument: SmtpInstrumentor, telemetry: Telemetry, server: RecordingServer
) -> None:
    gate = threading.Event()
    server.script.data_gate = gate
    client = await connected_client(server)

    with telemetry.tracer.start_as_current_span("first") as first:
        task = asyncio.ensure_future(client.sendmail(SENDER, RECIPIENTS, RAW))
        await wait_until_data_sent(server)
        task.cancel()
        with pytest.raises(asyncio.CancelledError) as raised:
            await task

    assert raised.type is asyncio.CancelledError
    span = telemetry.one_span("smtp send")
    assert span.end_time is not None
    assert span.status.status_code is StatusCode.ERROR
    assert dict(span.attributes or {})["error.type"] == CANCELLED
    assert span.parent is not None
    assert span.parent.span_id == first.get_span_context().span_id
    assert_no_open_transaction(client)

    replies_before = len(server.replies)
    gate.set()
    await wait_for_reply(server, replies_before + 1)
    if not DROPS_STALE_REPLIES:
        client.close()
        return

    with telemetry.tracer.start_as_current_span("second") as second:
        result = await client.sendmail(SENDER, RECIPIENTS, RAW)
    await client.quit()

    assert result[1] == "2.0.0 Ok: queued as 4Xb1Kq0cZ5z9v"
    spans = telemetry.spans("smtp send")
    assert len(spans) == 2
    next_span = spans[1]
    assert next_span.status.status_code is StatusCode.UNSET
    assert "error.type" not in dict(next_span.attributes or {})
    assert next_span.parent is not None
    assert next_span.parent.span_id == second.get_span_context().span_id
    assert next_span.links == ()
    assert split_traceparent(server.messages[1].content)[0] == inserted_line(next_span)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout needs Python 3.11")
async def test_asyncio_timeout_cancels_send(
    instrument: SmtpInstrumentor, telemetry: Telemetry, server: RecordingServer
) -> None:
    gate = threading.Event()
    server.script.data_gate = gate
    client = await connected_client(server)

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):  # type: ignore[attr-defined,unused-ignore]
            await client.sendmail(SENDER, RECIPIENTS, RAW)

    span = telemetry.one_span("smtp send")
    assert span.end_time is not None
    assert dict(span.attributes or {})["error.type"] == CANCELLED
    assert span.status.status_code is StatusCode.ERROR
    assert_no_open_transaction(client)
    gate.set()
    client.close()


async def test_cancel_hand_driven_data(
    instrument: SmtpInstrumentor, telemetry: Telemetry, server: RecordingServer
) -> None:
    gate = threading.Event()
    server.script.data_gate = gate
    client = await connected_client(server)
    await client.mail(SENDER)
    await client.rcpt("b@example.com")

    task = asyncio.ensure_future(client.data(RAW))
    await wait_until_data_sent(server)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    span = telemetry.one_span("smtp send")
    assert dict(span.attributes or {})["error.type"] == CANCELLED
    assert_no_open_transaction(client)
    gate.set()
    client.close()


async def test_server_stalls_until_client_timeout(
    instrument: SmtpInstrumentor, telemetry: Telemetry, server: RecordingServer
) -> None:
    gate = threading.Event()
    server.script.data_gate = gate
    client = await connected_client(server, timeout=0.3)

    with pytest.raises(aiosmtplib.SMTPTimeoutError) as raised:
        await client.sendmail(SENDER, RECIPIENTS, RAW)

    span = telemetry.one_span("smtp send")
    attributes = dict(span.attributes or {})
    expected = type(raised.value)
    assert attributes["error.type"] == f"{expected.__module__}.{expected.__qualname__}"
    assert span.status.status_code is StatusCode.ERROR
    assert span.end_time is not None
    assert_no_open_transaction(client)
    gate.set()


async def test_hand_driven_timeout_reports_timeout(
    instrument: SmtpInstrumentor, telemetry: Telemetry, server: RecordingServer
) -> None:
    gate = threading.Event()
    server.script.data_gate = gate
    client = await connected_client(server, timeout=0.3)
    await client.mail(SENDER)
    await client.rcpt("b@example.com")

    with pytest.raises(aiosmtplib.SMTPTimeoutError) as raised:
        await client.data(RAW)

    span = telemetry.one_span("smtp send")
    expected = type(raised.value)
    attributes = dict(span.attributes or {})
    assert attributes["error.type"] == f"{expected.__module__}.{expected.__qualname__}"
    assert_no_open_transaction(client)
    gate.set()


async def test_connect_timeout_span(
    instrument: SmtpInstrumentor, telemetry: Telemetry, server: RecordingServer
) -> None:
    # A listening socket that never sends a greeting. The writers are kept, because from
    # Python 3.13 on a garbage-collected StreamWriter closes its connection.
    open_writers: list[asyncio.StreamWriter] = []
    listener = await asyncio.start_server(
        lambda reader, writer: open_writers.append(writer), "127.0.0.1", 0
    )
    port = listener.sockets[0].getsockname()[1]
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=0.3, start_tls=False)
    try:
        with pytest.raises(aiosmtplib.SMTPTimeoutError):
            await client.connect()
    finally:
        for writer in open_writers:
            writer.close()
        listener.close()
        await listener.wait_closed()

    span = telemetry.one_span("smtp connect")
    attributes = dict(span.attributes or {})
    assert str(attributes["error.type"]).startswith("aiosmtplib.errors.SMTP")
    assert attributes["server.port"] == port
    assert span.status.status_code is StatusCode.ERROR
