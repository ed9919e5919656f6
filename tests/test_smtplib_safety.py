"""The instrumentation never breaks or changes mail beyond the inserted header lines."""

from __future__ import annotations

import re
import smtplib
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import baggage, context
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.propagate import get_global_textmap
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import CarrierT, Setter, TextMapPropagator, default_setter
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from opentelemetry_instrumentation_smtp import SmtpInstrumentor
from opentelemetry_instrumentation_smtp._smtplib import SmtplibDialect
from tests.conftest import Telemetry
from tests.smtpserver import RecordingServer

RAW = b"Subject: safe\r\n\r\nbody\r\n"
TRACEPARENT = re.compile(rb"traceparent: 00-[0-9a-f]{32}-[0-9a-f]{16}-0[0-3]\r\n")


@pytest.fixture
def instrumented(telemetry: Telemetry) -> Iterator[Any]:
    """Instrument with extra keyword arguments: ``instrumented(request_hook=...)``."""
    instrumentor = SmtpInstrumentor()

    def start(**kwargs: Any) -> SmtpInstrumentor:
        instrumentor.instrument(tracer_provider=telemetry.tracer_provider, **kwargs)
        return instrumentor

    yield start
    instrumentor.uninstrument()


def send(server: RecordingServer, payload: bytes | str = RAW) -> dict[str, Any]:
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        return client.sendmail("a@example.com", ["b@example.com"], payload)


class FieldsPropagator(TextMapPropagator):
    """A propagator that writes fixed fields, as a broken or hostile one might."""

    def __init__(self, fields: dict[str, str]) -> None:
        self._fields = fields

    def extract(self, carrier: CarrierT, context: Any = None, getter: Any = None) -> Any:
        return context

    def inject(
        self, carrier: CarrierT, context: Any = None, setter: Setter[CarrierT] = default_setter
    ) -> None:
        for name, value in self._fields.items():
            setter.set(carrier, name, value)

    @property
    def fields(self) -> set[str]:
        return set(self._fields)


class FailingPropagator(FieldsPropagator):
    def inject(self, carrier: CarrierT, context: Any = None, setter: Any = default_setter) -> None:
        raise RuntimeError("propagator is broken")


def test_failing_request_hook_still_sends(
    instrumented: Any,
    telemetry: Telemetry,
    server: RecordingServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def hook(*args: Any) -> None:
        raise ValueError("hook bug")

    instrumented(request_hook=hook, response_hook=hook)
    assert send(server) == {}
    assert TRACEPARENT.match(server.messages[0].content)
    assert len(telemetry.spans("smtp send")) == 1
    assert "request_hook" in caplog.text
    assert "response_hook" in caplog.text


def test_hooks_receive_arguments(
    instrumented: Any, telemetry: Telemetry, server: RecordingServer
) -> None:
    calls: list[tuple[Any, ...]] = []

    def request_hook(span: Any, client: Any, sender: Any, recipients: Any, message: Any) -> None:
        calls.append(("request", client, sender, recipients, message))
        span.set_attribute("custom.request", True)

    def response_hook(span: Any, client: Any, result: Any) -> None:
        calls.append(("response", client, result))

    instrumented(request_hook=request_hook, response_hook=response_hook)
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.sendmail("a@example.com", "b@example.com", RAW)
    assert calls == [
        ("request", client, "a@example.com", ["b@example.com"], RAW),
        ("response", client, {}),
    ]
    assert dict(telemetry.one_span("smtp send").attributes or {})["custom.request"] is True


def test_failing_propagator_sends_unchanged(
    instrumented: Any,
    telemetry: Telemetry,
    server: RecordingServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    instrumented(propagator=FailingPropagator({}))
    assert send(server) == {}
    assert server.messages[0].content == RAW
    span = telemetry.one_span("smtp send")
    assert dict(span.attributes or {})["smtp.trace_context.injected"] is False
    assert "inserting the trace context" in caplog.text


@pytest.mark.parametrize(
    "value",
    ["a\r\nBcc: victim@example.com", "a\nX: y", "a\rb", "caf\u00e9", "a\x00b", "a\x7fb"],
)
def test_unsafe_header_values_never_written(
    instrumented: Any, telemetry: Telemetry, server: RecordingServer, value: str
) -> None:
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    instrumented(propagator=FieldsPropagator({"traceparent": traceparent, "x-evil": value}))
    send(server)
    content = server.messages[0].content
    assert content == f"traceparent: {traceparent}\r\n".encode() + RAW
    assert b"x-evil" not in content.lower()


def test_unsafe_traceparent_not_written(
    instrumented: Any, telemetry: Telemetry, server: RecordingServer
) -> None:
    instrumented(propagator=FieldsPropagator({"traceparent": "00-abc\r\nBcc: x@example.com"}))
    send(server)
    assert server.messages[0].content == RAW
    assert (
        dict(telemetry.one_span("smtp send").attributes or {})["smtp.trace_context.injected"]
        is False
    )


def test_long_tracestate_folds_after_commas(
    instrumented: Any, telemetry: Telemetry, server: RecordingServer
) -> None:
    instrumented()
    members = [(f"vendor{i}", "x" * 20) for i in range(6)]
    parent = SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(1),
        trace_state=TraceState(members),
    )
    token = context.attach(set_span_in_context(NonRecordingSpan(parent)))
    try:
        send(server)
    finally:
        context.detach(token)
    content = server.messages[0].content
    header_block = content[: content.index(b"Subject: safe")]
    lines = header_block.split(b"\r\n")[:-1]
    assert lines[0].startswith(b"traceparent: 00-0af7651916cd43dd8448eb211c80319c-")
    assert lines[1].startswith(b"tracestate: ")
    assert all(len(line) <= 78 for line in lines)
    assert all(line.startswith(b" ") for line in lines[2:])
    unfolded = b"".join(line.strip() for line in lines[1:])
    assert unfolded == b"tracestate: " + b",".join(f"{k}={v}".encode() for k, v in members)


def test_baggage_not_sent_by_default(
    instrumented: Any, telemetry: Telemetry, server: RecordingServer
) -> None:
    instrumented()
    token = context.attach(baggage.set_baggage("user.id", "12345"))
    try:
        send(server)
    finally:
        context.detach(token)
    assert b"baggage" not in server.messages[0].content.lower()
    assert b"12345" not in server.messages[0].content


def test_explicit_propagator_sends_baggage(
    instrumented: Any, telemetry: Telemetry, server: RecordingServer
) -> None:
    from opentelemetry.baggage.propagation import W3CBaggagePropagator
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    propagator = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
    instrumented(propagator=propagator)
    token = context.attach(baggage.set_baggage("tenant", "blue"))
    try:
        send(server)
    finally:
        context.detach(token)
    assert b"\r\nbaggage: tenant=blue\r\nSubject: safe" in server.messages[0].content
    assert get_global_textmap() is not propagator


def test_caller_exception_is_same_object(
    instrumented: Any, telemetry: Telemetry, server: RecordingServer
) -> None:
    instrumented()
    sentinel = smtplib.SMTPDataError(554, b"custom")

    class Failing(smtplib.SMTP):
        def data(self, msg: Any) -> Any:
            raise sentinel

    with Failing("127.0.0.1", server.port) as client:
        with pytest.raises(smtplib.SMTPDataError) as caught:
            client.sendmail("a@example.com", ["b@example.com"], RAW)
    assert caught.value is sentinel
    assert dict(telemetry.one_span("smtp send").attributes or {})["error.type"] == "554"


def test_return_value_is_same_object(
    instrumented: Any, telemetry: Telemetry, server: RecordingServer
) -> None:
    instrumented()
    sentinel: dict[str, Any] = {}

    class Returning(smtplib.SMTP):
        def sendmail(self, *args: Any, **kwargs: Any) -> Any:
            super().sendmail(*args, **kwargs)
            return sentinel

    message = EmailMessage()
    message["From"] = "a@example.com"
    message["To"] = "b@example.com"
    message.set_content("x")
    with Returning("127.0.0.1", server.port) as client:
        assert client.send_message(message) is sentinel
    assert len(telemetry.spans("smtp send")) == 1


def test_attribute_extraction_failure_still_sends(
    instrumented: Any,
    telemetry: Telemetry,
    server: RecordingServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(self: Any, client: Any) -> Any:
        raise OSError("no peer")

    monkeypatch.setattr(SmtplibDialect, "endpoint", broken)
    instrumented()
    assert send(server) == {}
    assert TRACEPARENT.match(server.messages[0].content)
    assert len(telemetry.spans("smtp send")) == 1
    assert "reading the connection's addresses" in caplog.text


@pytest.mark.parametrize(
    "payload",
    [
        b"From sender@example.com Thu Jan  1 00:00:00 2026\r\nSubject: mbox\r\n\r\nx\r\n",
        b" continuation\r\nSubject: x\r\n\r\nbody\r\n",
        b"just a body line without a header\r\n",
        b"Subject: bare\rCR\r\n\r\nbody\r\n",
    ],
    ids=["mbox-from-line", "continuation-first", "body-only", "bare-cr"],
)
def test_uninsertable_payload_sent_unchanged(
    instrumented: Any, telemetry: Telemetry, server: RecordingServer, payload: bytes
) -> None:
    instrumented()
    send(server, payload)
    assert server.messages[0].content == payload
    span = telemetry.one_span("smtp send")
    assert dict(span.attributes or {})["smtp.trace_context.injected"] is False


def test_empty_header_section_gets_header(
    instrumented: Any, telemetry: Telemetry, server: RecordingServer
) -> None:
    instrumented()
    payload = b"\r\nbody only\r\n"
    send(server, payload)
    content = server.messages[0].content
    match = TRACEPARENT.match(content)
    assert match
    assert content[match.end() :] == payload


def test_uninstrumented_client_untouched(telemetry: Telemetry, server: RecordingServer) -> None:
    instrumentor = SmtpInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.tracer_provider)
    instrumentor.uninstrument()
    send(server)
    assert server.messages[0].content == RAW
    assert telemetry.spans() == []


_header_name = st.from_regex(r"X-[A-Za-z0-9-]{1,20}", fullmatch=True)
_header_value = st.from_regex(r"[ -~]{0,60}", fullmatch=True).map(str.strip)
_body_line = st.one_of(
    st.binary(max_size=80).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    st.sampled_from([b".", b"..", b".dot", b"", b"From me", b"\x00\xff"]),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    headers=st.lists(st.tuples(_header_name, _header_value), min_size=1, max_size=6),
    body=st.lists(_body_line, max_size=12),
    ending=st.sampled_from([b"\r\n", b"\n"]),
    final_newline=st.booleans(),
)
def test_random_messages_arrive_identical(
    instrument: SmtpInstrumentor,
    server: RecordingServer,
    headers: list[tuple[str, str]],
    body: list[bytes],
    ending: bytes,
    final_newline: bool,
) -> None:
    head = ending.join(f"{name}: {value}".encode() for name, value in headers)
    payload = head + ending + ending + ending.join(body)
    if final_newline:
        payload += ending
    # The same payload is sent once untraced and once traced: what the server receives
    # must differ only by the inserted line.
    before = len(server.messages)
    with suppress_instrumentation():
        send(server, payload)
    send(server, payload)
    plain = server.messages[before].content
    traced = server.messages[before + 1].content
    expected_line = TRACEPARENT.pattern.replace(rb"\r\n", re.escape(ending))
    match = re.match(expected_line, traced)
    assert match, traced[:100]
    assert traced[match.end() :] == plain


def test_logging_of_diagnostics_cannot_loop(
    instrumented: Any, telemetry: Telemetry, server: RecordingServer
) -> None:
    """A root SMTPHandler that gets the diagnostic sends it untraced, once."""
    import logging
    import logging.handlers

    def hook(*args: Any) -> None:
        raise ValueError("hook bug")

    instrumented(request_hook=hook)
    handler = logging.handlers.SMTPHandler(
        ("127.0.0.1", server.port), "app@example.com", ["ops@example.com"], "diagnostic"
    )
    handler.setLevel(logging.WARNING)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        send(server)
    finally:
        root.removeHandler(handler)
    # The application's message and the one diagnostic mail; only the first is traced.
    assert len(server.messages) == 2
    assert len(telemetry.spans("smtp send")) == 1
    assert b"traceparent" not in server.messages[0].content
    assert TRACEPARENT.match(server.messages[1].content)


@pytest.mark.parametrize(
    "fields",
    [
        {"x-long": "v" * 1200},
        {"From": "evil@example.com"},
        {"content-type": "text/html"},
        {"Resent-To": "evil@example.com"},
        {"TRACEPARENT": "garbage"},
    ],
    ids=["over-998", "from", "content-type", "resent", "invalid-traceparent"],
)
def test_propagator_fields_rejected(
    instrumented: Any, telemetry: Telemetry, server: RecordingServer, fields: dict[str, str]
) -> None:
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    instrumented(propagator=FieldsPropagator({**fields, "traceparent": traceparent}))
    assert send(server) == {}
    # Only the valid traceparent is written. For "TRACEPARENT: garbage", the invalid field
    # is rejected and the valid one of the same name in another case is written instead.
    assert server.messages[0].content == f"traceparent: {traceparent}\r\n".encode() + RAW


def test_duplicate_names_written_once(
    instrumented: Any, telemetry: Telemetry, server: RecordingServer
) -> None:
    first = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    second = "00-1af7651916cd43dd8448eb211c80319c-c7ad6b7169203331-01"
    instrumented(propagator=FieldsPropagator({"traceparent": first, "TraceParent": second}))
    send(server)
    content = server.messages[0].content
    assert content.lower().count(b"traceparent") == 1


def test_non_ascii_str_raises_same_error(
    instrumented: Any, telemetry: Telemetry, server: RecordingServer
) -> None:
    payload = "Subject: caf\u00e9\r\n\r\nb\r\n"
    with pytest.raises(UnicodeEncodeError) as plain:
        with suppress_instrumentation():
            send(server, payload)
    instrumented()
    with pytest.raises(UnicodeEncodeError) as traced:
        send(server, payload)
    assert traced.value.args == plain.value.args
    assert str(traced.value) == str(plain.value)


def test_tracestate_without_traceparent_untouched(
    instrumented: Any, telemetry: Telemetry, server: RecordingServer
) -> None:
    instrumented()
    payload = b"tracestate: a=b\r\nSubject: x\r\n\r\nb\r\n"
    send(server, payload)
    assert server.messages[0].content == payload
    assert (
        dict(telemetry.one_span("smtp send").attributes or {})["smtp.trace_context.injected"]
        is False
    )


def test_traceparent_deep_in_large_header(
    instrumented: Any, telemetry: Telemetry, server: RecordingServer
) -> None:
    instrumented()
    filler = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"y" * 60) for i in range(30000))
    existing = b"traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"
    payload = filler + existing + b"Subject: big\r\n\r\nbody\r\n"
    assert len(filler) > 2 * 1024 * 1024
    send(server, payload)
    assert server.messages[0].content == payload
    assert len(telemetry.one_span("smtp send").links) == 1


def test_generator_recipients_not_consumed(telemetry: Telemetry, server: RecordingServer) -> None:
    instrumentor = SmtpInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.tracer_provider, capture_addresses=True)
    try:
        with smtplib.SMTP("127.0.0.1", server.port) as client:
            client.ehlo()
            client.mail("a@example.com")
            recipients = (address for address in ["b@example.com"])
            for address in recipients:
                client.rcpt(address)
            client.data(RAW)
    finally:
        instrumentor.uninstrument()
    assert server.messages[0].rcpt_tos == ["b@example.com"]
