"""The header insertion rules, checked on the bytes that aiosmtplib puts on the wire."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiosmtplib
import pytest
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_setter,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from opentelemetry_instrumentation_smtp import SmtpInstrumentor
from tests.aiosmtplib.support import (
    RAW,
    RECIPIENTS,
    SENDER,
    connected_client,
    inserted_line,
    make_message,
)
from tests.conftest import Telemetry
from tests.smtpserver import RecordingServer

EXISTING = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class UnsafePropagator(TextMapPropagator):
    """Writes a valid traceparent and a field whose value would start a new header."""

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        span_context = trace.get_current_span(context).get_span_context()
        setter.set(
            carrier,
            "traceparent",
            f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-01",
        )
        setter.set(carrier, "x-injected", "a\r\nBcc: victim@example.com")

    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[CarrierT] | None = None,
    ) -> Context:
        return context if context is not None else otel_context.get_current()

    @property
    def fields(self) -> set[str]:
        return {"traceparent", "x-injected"}


@pytest.mark.parametrize("name", ["traceparent", "TraceParent", "TRACEPARENT"])
async def test_existing_valid_traceparent_kept_and_linked(
    instrument: SmtpInstrumentor,
    telemetry: Telemetry,
    server: RecordingServer,
    client: aiosmtplib.SMTP,
    name: str,
) -> None:
    payload = f"{name}: {EXISTING}\r\nSubject: again\r\n\r\nbody\r\n".encode()
    await client.sendmail(SENDER, RECIPIENTS, payload)

    assert server.messages[0].content == payload
    span = telemetry.one_span("smtp send")
    assert dict(span.attributes or {})["smtp.trace_context.injected"] is False
    assert len(span.links) == 1
    assert f"{span.links[0].context.trace_id:032x}" == EXISTING[3:35]
    assert f"{span.links[0].context.span_id:016x}" == EXISTING[36:52]


async def test_existing_traceparent_in_message_object(
    instrument: SmtpInstrumentor,
    telemetry: Telemetry,
    server: RecordingServer,
    client: aiosmtplib.SMTP,
) -> None:
    message = make_message()
    message["Traceparent"] = EXISTING
    await client.send_message(message)

    content = server.messages[0].content
    assert content.lower().count(b"traceparent:") == 1
    span = telemetry.one_span("smtp send")
    assert [f"{link.context.span_id:016x}" for link in span.links] == [EXISTING[36:52]]


async def test_existing_invalid_traceparent_kept_without_link(
    instrument: SmtpInstrumentor,
    telemetry: Telemetry,
    server: RecordingServer,
    client: aiosmtplib.SMTP,
) -> None:
    payload = b"Subject: x\r\ntraceparent: not-a-trace-context\r\n\r\nbody\r\n"
    await client.sendmail(SENDER, RECIPIENTS, payload)

    assert server.messages[0].content == payload
    span = telemetry.one_span("smtp send")
    assert list(span.links) == []
    assert dict(span.attributes or {})["smtp.trace_context.injected"] is False


async def test_existing_traceparent_in_hand_driven_data(
    instrument: SmtpInstrumentor,
    telemetry: Telemetry,
    server: RecordingServer,
    client: aiosmtplib.SMTP,
) -> None:
    payload = f"traceparent: {EXISTING}\r\n\r\nbody\r\n".encode()
    await client.mail(SENDER)
    await client.rcpt("b@example.com")
    await client.data(payload)

    assert server.messages[0].content == payload
    span = telemetry.one_span("smtp send")
    assert [f"{link.context.span_id:016x}" for link in span.links] == [EXISTING[36:52]]


async def test_tracestate_line_when_non_empty(
    instrument: SmtpInstrumentor,
    telemetry: Telemetry,
    server: RecordingServer,
    client: aiosmtplib.SMTP,
) -> None:
    parent = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "value1"), ("other", "value2")]),
    )
    token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(parent)))
    try:
        await client.sendmail(SENDER, RECIPIENTS, RAW)
    finally:
        otel_context.detach(token)

    span = telemetry.one_span("smtp send")
    expected = inserted_line(span) + b"tracestate: vendor=value1,other=value2\r\n"
    assert server.messages[0].content == expected + RAW


async def test_baggage_not_sent_by_default(
    instrument: SmtpInstrumentor,
    telemetry: Telemetry,
    server: RecordingServer,
    client: aiosmtplib.SMTP,
) -> None:
    token = otel_context.attach(baggage.set_baggage("user.id", "12345"))
    try:
        await client.sendmail(SENDER, RECIPIENTS, RAW)
    finally:
        otel_context.detach(token)

    content = server.messages[0].content
    assert content == inserted_line(telemetry.one_span("smtp send")) + RAW
    assert b"baggage" not in content.lower()


async def test_unsafe_propagator_value_never_written(
    instrument_with: Callable[..., SmtpInstrumentor],
    telemetry: Telemetry,
    server: RecordingServer,
) -> None:
    instrument_with(propagator=UnsafePropagator())
    client = await connected_client(server)
    await client.sendmail(SENDER, RECIPIENTS, RAW)
    await client.quit()

    span = telemetry.one_span("smtp send")
    context_ = span.context
    assert context_ is not None
    line = f"traceparent: 00-{context_.trace_id:032x}-{context_.span_id:016x}-01\r\n".encode()
    assert server.messages[0].content == line + RAW
    assert server.messages[0].rcpt_tos == RECIPIENTS


@pytest.mark.parametrize(
    ("options", "environment"),
    [({"propagate": False}, None), ({}, "false")],
    ids=["argument", "environment"],
)
async def test_propagation_off(
    instrument_with: Callable[..., SmtpInstrumentor],
    telemetry: Telemetry,
    server: RecordingServer,
    monkeypatch: pytest.MonkeyPatch,
    options: dict[str, Any],
    environment: str | None,
) -> None:
    if environment is not None:
        monkeypatch.setenv("OTEL_INSTRUMENTATION_SMTP_PROPAGATE", environment)
    instrument_with(**options)
    client = await connected_client(server)
    await client.sendmail(SENDER, RECIPIENTS, RAW)
    await client.quit()

    assert server.messages[0].content == RAW
    span = telemetry.one_span("smtp send")
    assert dict(span.attributes or {})["smtp.trace_context.injected"] is False


async def test_suppressed_means_no_span_and_no_header(
    instrument: SmtpInstrumentor,
    telemetry: Telemetry,
    server: RecordingServer,
    client: aiosmtplib.SMTP,
) -> None:
    with suppress_instrumentation():
        await client.sendmail(SENDER, RECIPIENTS, RAW)
        await client.send_message(make_message())

    assert telemetry.spans("smtp send") == []
    assert server.messages[0].content == RAW
    assert b"traceparent" not in server.messages[1].content.lower()


@pytest.mark.parametrize(
    "payload",
    [
        b"From sender@example.com Mon Jan  1 00:00:00 2024\r\nSubject: mbox\r\n\r\nbody\r\n",
        b" folded continuation first\r\nSubject: odd\r\n\r\nbody\r\n",
        b"no header section at all\r\n",
    ],
    ids=["mbox-from-line", "continuation-first", "no-header"],
)
async def test_payload_without_header_start_sent_unchanged(
    instrument: SmtpInstrumentor,
    telemetry: Telemetry,
    server: RecordingServer,
    client: aiosmtplib.SMTP,
    payload: bytes,
) -> None:
    await client.sendmail(SENDER, RECIPIENTS, payload)

    assert server.messages[0].content == payload
    attributes = dict(telemetry.one_span("smtp send").attributes or {})
    assert attributes["smtp.trace_context.injected"] is False


async def test_empty_header_section_gets_line(
    instrument: SmtpInstrumentor,
    telemetry: Telemetry,
    server: RecordingServer,
    client: aiosmtplib.SMTP,
) -> None:
    payload = b"\r\nbody only\r\n"
    await client.sendmail(SENDER, RECIPIENTS, payload)

    span = telemetry.one_span("smtp send")
    assert server.messages[0].content == inserted_line(span) + payload
