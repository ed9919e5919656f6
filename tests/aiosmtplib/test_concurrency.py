"""Hundreds of interleaved sends on one event loop: each message carries its own span."""

from __future__ import annotations

import asyncio
import re
from email.message import EmailMessage

import aiosmtplib
import pytest
from opentelemetry.sdk.trace import ReadableSpan

from opentelemetry_instrumentation_smtp import SmtpInstrumentor
from tests.aiosmtplib.support import RECIPIENTS, SENDER, connected_client, split_traceparent
from tests.conftest import Telemetry
from tests.smtpserver import RecordingServer

TASKS = 200
TASK_HEADER = re.compile(rb"^X-Task: (\d+)\r$", re.MULTILINE)
TRACEPARENT = re.compile(rb"^traceparent: 00-([0-9a-f]{32})-([0-9a-f]{16})-")


def task_message(index: int) -> EmailMessage:
    message = EmailMessage()
    message["From"] = SENDER
    message["To"] = RECIPIENTS[0]
    message["X-Task"] = str(index)
    message.set_content(f"message of task {index}\n")
    return message


async def send_as_task(
    telemetry: Telemetry, client: aiosmtplib.SMTP, index: int
) -> tuple[int, int, int]:
    """Send one message under the task's own span; return (index, trace id, span id)."""
    with telemetry.tracer.start_as_current_span(f"task {index}") as parent:
        # Let every task open its parent span before any of them sends.
        await asyncio.sleep(0)
        if index % 2:
            await client.send_message(task_message(index))
        else:
            raw = f"X-Task: {index}\r\nSubject: task\r\n\r\nbody of task {index}\r\n"
            await client.sendmail(SENDER, RECIPIENTS, raw)
    context = parent.get_span_context()
    return index, context.trace_id, context.span_id


def check_each_message(
    telemetry: Telemetry, server: RecordingServer, parents: list[tuple[int, int, int]]
) -> None:
    spans: dict[int, ReadableSpan] = {}
    for span in telemetry.spans("smtp send"):
        assert span.context is not None
        spans[span.context.span_id] = span
    assert len(spans) == TASKS
    parent_of_task = {index: (trace_id, span_id) for index, trace_id, span_id in parents}

    seen_tasks = set()
    assert len(server.messages) == TASKS
    for received in server.messages:
        line, rest = split_traceparent(received.content)
        task_match = TASK_HEADER.search(rest)
        assert task_match is not None, rest[:200]
        index = int(task_match.group(1))
        seen_tasks.add(index)
        line_match = TRACEPARENT.match(line)
        assert line_match is not None
        span = spans[int(line_match.group(2), 16)]
        assert span.parent is not None
        expected_trace, expected_parent = parent_of_task[index]
        assert span.parent.span_id == expected_parent, f"task {index}"
        assert span.context is not None
        assert span.context.trace_id == expected_trace == int(line_match.group(1), 16)
        assert rest.lower().count(b"traceparent:") == 0
    assert seen_tasks == set(range(TASKS))


@pytest.mark.parametrize("connections", [20, 1], ids=["20-connections", "one-connection"])
async def test_concurrent_tasks_each_carry_own_span(
    instrument: SmtpInstrumentor,
    telemetry: Telemetry,
    server: RecordingServer,
    connections: int,
) -> None:
    clients = [await connected_client(server) for _ in range(connections)]

    parents = await asyncio.gather(
        *(send_as_task(telemetry, clients[index % connections], index) for index in range(TASKS))
    )
    for client in clients:
        await client.quit()

    check_each_message(telemetry, server, list(parents))
    assert all(span.status.is_ok for span in telemetry.spans("smtp send"))
