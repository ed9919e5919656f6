"""Acceptance: instrumented smtplib sends through a real Postfix that calls the milter.

Postfix relays to a local sink. These tests skip when Postfix is missing on a developer
machine, and fail when it is missing in CI (CI is set), where .ci/run installs it.
"""

from __future__ import annotations

import asyncio
import email.message
import os
import shutil
import smtplib
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from opentelemetry_instrumentation_smtp import SmtpInstrumentor
from opentelemetry_instrumentation_smtp.milter import HeaderPolicy, MilterConfig, MilterServer

from .postfix import MYHOSTNAME, Postfix, Sink, postfix_binary

pytestmark = pytest.mark.postfix

DELIVERY_TIMEOUT = 60.0


def require_postfix() -> None:
    problem = None
    if postfix_binary() is None:
        problem = "the postfix command is not installed (.ci/run installs it from Debian)"
    elif os.geteuid() != 0:
        problem = "a private Postfix instance must be started as root"
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {problem}")
    pytest.skip(problem)


@dataclass
class Stack:
    """Postfix, the sink it relays to, and the milter it calls, with the collected spans."""

    postfix: Postfix
    sink: Sink
    milter: MilterServer
    exporter: InMemorySpanExporter
    tracer_provider: TracerProvider
    # Messages the sink had received before the current test.
    baseline: int = 0

    def spans(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.exporter.get_finished_spans() if span.name == name]


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    require_postfix()
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="milter", daemon=True)
    thread.start()
    milter = MilterServer(tracer_provider=tracer_provider)
    asyncio.run_coroutine_threadsafe(milter.start(), loop).result()
    host, port = milter.address  # type: ignore[misc]
    sink = Sink().start()
    directory = Path(tempfile.mkdtemp(prefix="postfix-test-"))
    postfix = Postfix(directory, relay_port=sink.port, milter=f"inet:{host}:{port}")
    try:
        postfix.start()
        yield Stack(postfix, sink, milter, exporter, tracer_provider)
    finally:
        postfix.stop()
        sink.stop()
        asyncio.run_coroutine_threadsafe(milter.close(timeout=5), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def fresh(stack: Stack) -> Stack:
    """The shared stack with no spans, no sunk messages and no header policy."""
    stack.exporter.clear()
    stack.baseline = len(stack.sink.messages)
    stack.milter.config = MilterConfig()
    return stack


@pytest.fixture
def instrumented(fresh: Stack) -> Iterator[Stack]:
    instrumentor = SmtpInstrumentor()
    instrumentor.instrument(tracer_provider=fresh.tracer_provider)
    yield fresh
    instrumentor.uninstrument()


def new_message(number: int, recipient: str = "rcpt@example.org") -> email.message.EmailMessage:
    message = email.message.EmailMessage()
    message["From"] = "sender@example.com"
    message["To"] = recipient
    message["Subject"] = f"test {number}"
    message["Message-ID"] = f"<acceptance-{number}@example.com>"
    message.set_content(f"Body of message {number}.\n")
    return message


def traceparent_of(span: ReadableSpan) -> str:
    context = span.context
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def sunk_headers(stack: Stack, count: int) -> list[email.message.Message]:
    messages = stack.sink.wait_for(stack.baseline + count, DELIVERY_TIMEOUT)
    return [message_from_bytes(message.content) for message in messages[stack.baseline :]]


def test_client_and_milter_spans_share_trace(instrumented: Stack) -> None:
    stack = instrumented
    with smtplib.SMTP("127.0.0.1", stack.postfix.smtp_port) as client:
        client.send_message(new_message(1))
    (delivered,) = sunk_headers(stack, 1)

    (client_span,) = [s for s in stack.spans("smtp send") if s.kind is SpanKind.CLIENT]
    (milter_span,) = stack.spans("smtp receive")
    assert milter_span.kind is SpanKind.SERVER
    assert client_span.context is not None and milter_span.context is not None
    assert milter_span.context.trace_id == client_span.context.trace_id
    assert milter_span.parent is not None
    assert milter_span.parent.span_id == client_span.context.span_id

    queue_id = client_span.attributes["smtp.queue_id"]
    assert isinstance(queue_id, str) and queue_id
    assert milter_span.attributes["smtp.queue_id"] == queue_id
    assert f"with ESMTP id {queue_id}" in " ".join(str(delivered["Received"]).split())

    attributes = milter_span.attributes
    assert attributes["smtp.trace_context"] == "present"
    assert attributes["server.address"] == MYHOSTNAME
    assert attributes["client.address"] == "127.0.0.1"
    assert attributes["smtp.mta.name"] == "Postfix"
    assert attributes["smtp.recipients.count"] == 1
    assert attributes["messaging.message.id"] == "<acceptance-1@example.com>"
    assert attributes["messaging.system"] == "smtp"
    assert attributes["messaging.operation.type"] == "receive"
    assert "smtp.envelope.from" not in attributes

    # The milter changed nothing: the client's traceparent reaches the next hop.
    assert delivered["traceparent"] == traceparent_of(client_span)
    assert delivered["Message-ID"] == "<acceptance-1@example.com>"
    assert delivered["Subject"] == "test 1"
    assert delivered.get_payload() == "Body of message 1.\r\n"


def test_several_messages_in_one_session(instrumented: Stack) -> None:
    stack = instrumented
    with smtplib.SMTP("127.0.0.1", stack.postfix.smtp_port) as client:
        for number in range(2, 5):
            client.send_message(new_message(number))
    delivered = sunk_headers(stack, 3)

    client_spans = [s for s in stack.spans("smtp send") if s.kind is SpanKind.CLIENT]
    milter_spans = stack.spans("smtp receive")
    assert len(client_spans) == 3
    assert len(milter_spans) == 3
    queue_ids = [span.attributes["smtp.queue_id"] for span in client_spans]
    assert len(set(queue_ids)) == 3
    assert [span.attributes["smtp.queue_id"] for span in milter_spans] == queue_ids
    # Postfix's queue manager may deliver the three messages in any order, so the
    # delivered copies are matched to the spans by Message-ID.
    delivered_by_id = {message["Message-ID"]: message for message in delivered}
    assert len(delivered_by_id) == 3
    for client_span, milter_span in zip(client_spans, milter_spans, strict=True):
        assert client_span.context is not None and milter_span.parent is not None
        assert milter_span.parent.span_id == client_span.context.span_id
        message = delivered_by_id[milter_span.attributes["messaging.message.id"]]
        assert message["traceparent"] == traceparent_of(client_span)


def test_rewrite_policy_reaches_next_hop(instrumented: Stack) -> None:
    stack = instrumented
    stack.milter.config = MilterConfig(policy=HeaderPolicy(rewrite_traceparent=True))
    with smtplib.SMTP("127.0.0.1", stack.postfix.smtp_port) as client:
        client.send_message(new_message(5))
    (delivered,) = sunk_headers(stack, 1)
    (milter_span,) = stack.spans("smtp receive")
    assert delivered.get_all("traceparent") == [traceparent_of(milter_span)]
    assert milter_span.attributes["smtp.milter.header_action"] == "rewritten"


def test_inject_policy_starts_trace_at_mta(fresh: Stack) -> None:
    stack = fresh
    stack.milter.config = MilterConfig(policy=HeaderPolicy(inject_traceparent=True))
    with smtplib.SMTP("127.0.0.1", stack.postfix.smtp_port) as client:
        client.send_message(new_message(6))
    (delivered,) = sunk_headers(stack, 1)
    (milter_span,) = stack.spans("smtp receive")
    assert milter_span.parent is None
    assert milter_span.attributes["smtp.trace_context"] == "absent"
    assert delivered.get_all("traceparent") == [traceparent_of(milter_span)]


def test_strip_policy_for_external_recipient(instrumented: Stack) -> None:
    stack = instrumented
    stack.milter.config = MilterConfig(
        policy=HeaderPolicy(strip_external=True, internal_domains=frozenset({"example.org"}))
    )
    with smtplib.SMTP("127.0.0.1", stack.postfix.smtp_port) as client:
        client.send_message(new_message(7, recipient="someone@external.example"))
        client.send_message(new_message(8))
    external, internal = sunk_headers(stack, 2)
    assert external.get_all("traceparent") is None
    assert external["Subject"] == "test 7"
    assert internal["traceparent"] is not None
    actions = [
        span.attributes.get("smtp.milter.header_action") for span in stack.spans("smtp receive")
    ]
    assert actions == ["stripped", None]
