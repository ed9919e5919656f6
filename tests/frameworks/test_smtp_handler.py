"""``logging.handlers.SMTPHandler`` on the root logger: one record, one email, one span.

The instrumentation logs its own internal errors, and with an SMTPHandler on the root
logger such a diagnostic is itself mailed. That send must stay untraced, so that a
failing hook or propagator cannot start a chain of traced sends and diagnostics.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from logging.handlers import SMTPHandler
from typing import Any

import pytest
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import StatusCode

from opentelemetry_instrumentation_smtp import SmtpInstrumentor, _diagnostics
from tests.conftest import Telemetry
from tests.frameworks.mailcheck import parse, span_traceparent, split_traceparent
from tests.smtpserver import RecordingServer

APP_LOG_TEXT = "Payment failed for order 42"


class _FailingPropagator(TextMapPropagator):
    """A propagator whose inject() raises, as a broken third-party propagator might."""

    def extract(self, carrier: Any, context: Any = None, getter: Any = None) -> Any:
        raise NotImplementedError

    def inject(self, carrier: Any, context: Any = None, setter: Any = None) -> None:
        raise RuntimeError("propagator failed")

    @property
    def fields(self) -> set[str]:
        return {"traceparent"}


def _raise(*args: object) -> None:
    raise RuntimeError("hook failed")


FAULTS: dict[str, dict[str, Any]] = {
    "request_hook": {"request_hook": _raise},
    "response_hook": {"response_hook": _raise},
    "propagator": {"propagator": _FailingPropagator()},
}


@pytest.fixture
def root_handler(server: RecordingServer) -> Iterator[SMTPHandler]:
    handler = SMTPHandler(
        ("127.0.0.1", server.port), "app@example.com", ["ops@example.com"], "Application error"
    )
    handler.setLevel(logging.WARNING)
    root = logging.getLogger()
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)
    handler.close()


@pytest.fixture
def fresh_error_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    # Repeated internal errors are rate-limited per site for the whole process, so
    # each test starts from zero to get its diagnostic logged.
    monkeypatch.setattr(_diagnostics, "_counts", {})


def body_text(content: bytes) -> str:
    text = parse(content).get_content()
    assert isinstance(text, str)
    return text


def test_one_record_one_email_one_span(
    instrument: SmtpInstrumentor,
    telemetry: Telemetry,
    server: RecordingServer,
    root_handler: SMTPHandler,
) -> None:
    with telemetry.tracer.start_as_current_span("checkout") as parent:
        logging.getLogger("shop.payments").error(APP_LOG_TEXT)

    assert len(server.messages) == 1
    span = telemetry.one_span("smtp send")
    assert len(telemetry.spans("smtp connect")) == 1
    assert span.parent is not None
    assert span.parent.span_id == parent.get_span_context().span_id
    traceparent, rest = split_traceparent(server.messages[0].content)
    assert traceparent == span_traceparent(span)
    assert body_text(rest).strip() == APP_LOG_TEXT
    assert parse(rest)["Subject"] == "Application error"


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_internal_error_mailed_untraced(
    fault: str,
    telemetry: Telemetry,
    server: RecordingServer,
    root_handler: SMTPHandler,
    fresh_error_counts: None,
) -> None:
    instrumentor = SmtpInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.tracer_provider, **FAULTS[fault])
    try:
        logging.getLogger("shop.payments").error(APP_LOG_TEXT)
    finally:
        instrumentor.uninstrument()

    # The diagnostic is mailed from inside the application's send: before the message
    # when preparing it failed, after the message when the response_hook failed.
    assert len(server.messages) == 2
    first, second = (message.content for message in server.messages)
    diagnostic, application = (second, first) if fault == "response_hook" else (first, second)
    assert b"traceparent" not in diagnostic.lower()
    assert "OpenTelemetry SMTP instrumentation error" in body_text(diagnostic)
    span = telemetry.one_span("smtp send")
    assert len(telemetry.spans("smtp connect")) == 1
    assert span.status.status_code is StatusCode.UNSET
    assert sum(_diagnostics.error_counts().values()) == 1

    if fault == "propagator":
        assert body_text(application).strip() == APP_LOG_TEXT
        assert dict(span.attributes or {})["smtp.trace_context.injected"] is False
    else:
        traceparent, rest = split_traceparent(application)
        assert traceparent == span_traceparent(span)
        assert body_text(rest).strip() == APP_LOG_TEXT


def test_internal_error_below_handler_level(
    telemetry: Telemetry,
    server: RecordingServer,
    root_handler: SMTPHandler,
    fresh_error_counts: None,
) -> None:
    root_handler.setLevel(logging.ERROR)
    instrumentor = SmtpInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.tracer_provider, request_hook=_raise)
    try:
        logging.getLogger("shop.payments").error(APP_LOG_TEXT)
    finally:
        instrumentor.uninstrument()

    assert len(server.messages) == 1
    span = telemetry.one_span("smtp send")
    traceparent, rest = split_traceparent(server.messages[0].content)
    assert traceparent == span_traceparent(span)
    assert body_text(rest).strip() == APP_LOG_TEXT
    assert _diagnostics.error_counts() == {"request_hook": 1}


def test_capture_addresses_from_headers(
    telemetry: Telemetry, server: RecordingServer, root_handler: SMTPHandler
) -> None:
    # SMTPHandler calls send_message without addresses, so smtplib takes the envelope
    # from the From and To headers; the span records that envelope.
    instrumentor = SmtpInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.tracer_provider, capture_addresses=True)
    try:
        logging.getLogger("shop.payments").error(APP_LOG_TEXT)
    finally:
        instrumentor.uninstrument()

    attributes = dict(telemetry.one_span("smtp send").attributes or {})
    assert attributes["smtp.envelope.from"] == "app@example.com"
    assert tuple(attributes["smtp.envelope.to"]) == ("ops@example.com",)  # type: ignore[arg-type]
