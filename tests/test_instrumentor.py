"""SmtpInstrumentor lifecycle: instrument, instrument again, uninstrument, configuration."""

from __future__ import annotations

import smtplib
from importlib.metadata import entry_points
from smtplib import SMTP as ImportedBeforeInstrument  # noqa: N811

import pytest

from opentelemetry_instrumentation_smtp import SmtpInstrumentor
from opentelemetry_instrumentation_smtp._smtplib import WRAPPED_METHODS
from tests.conftest import Telemetry
from tests.smtpserver import RecordingServer

RAW = b"Subject: x\r\n\r\nbody\r\n"


def originals() -> dict[tuple[type, str], object]:
    return {(cls, name): cls.__dict__[name] for cls, name in WRAPPED_METHODS}


def test_uninstrument_restores_originals(telemetry: Telemetry) -> None:
    before = originals()
    instrumentor = SmtpInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.tracer_provider)
    wrapped = originals()
    assert all(wrapped[key] is not before[key] for key in before)
    instrumentor.uninstrument()
    after = originals()
    assert all(after[key] is before[key] for key in before)


def test_instrument_twice_is_harmless(telemetry: Telemetry, server: RecordingServer) -> None:
    instrumentor = SmtpInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.tracer_provider)
    instrumentor.instrument(tracer_provider=telemetry.tracer_provider)
    SmtpInstrumentor().instrument(tracer_provider=telemetry.tracer_provider)
    try:
        with smtplib.SMTP("127.0.0.1", server.port) as client:
            client.sendmail("a@example.com", ["b@example.com"], RAW)
    finally:
        instrumentor.uninstrument()
    assert len(telemetry.spans("smtp send")) == 1
    assert server.messages[0].content.count(b"traceparent") == 1


def test_name_imported_before_instrument(
    instrument: SmtpInstrumentor, telemetry: Telemetry, server: RecordingServer
) -> None:
    with ImportedBeforeInstrument("127.0.0.1", server.port) as client:
        client.sendmail("a@example.com", ["b@example.com"], RAW)
    assert len(telemetry.spans("smtp send")) == 1


def test_dependencies_do_not_name_aiosmtplib() -> None:
    dependencies = SmtpInstrumentor().instrumentation_dependencies()
    assert not any("aiosmtplib" in dependency for dependency in dependencies)


def test_entry_point_registered() -> None:
    found = [ep for ep in entry_points(group="opentelemetry_instrumentor") if ep.name == "smtp"]
    assert len(found) == 1
    assert found[0].load() is SmtpInstrumentor


@pytest.mark.parametrize(
    ("value", "inserted"),
    [("false", False), ("0", False), ("true", True), ("bogus", True), ("", True)],
)
def test_propagate_environment_variable(
    telemetry: Telemetry,
    server: RecordingServer,
    monkeypatch: pytest.MonkeyPatch,
    value: str,
    inserted: bool,
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_SMTP_PROPAGATE", value)
    instrumentor = SmtpInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.tracer_provider)
    try:
        with smtplib.SMTP("127.0.0.1", server.port) as client:
            client.sendmail("a@example.com", ["b@example.com"], RAW)
    finally:
        instrumentor.uninstrument()
    assert server.messages[0].content.startswith(b"traceparent: ") is inserted


def test_keyword_wins_over_environment(
    telemetry: Telemetry, server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_SMTP_CAPTURE_ADDRESSES", "true")
    instrumentor = SmtpInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.tracer_provider, capture_addresses=False)
    try:
        with smtplib.SMTP("127.0.0.1", server.port) as client:
            client.sendmail("a@example.com", ["b@example.com"], RAW)
    finally:
        instrumentor.uninstrument()
    assert "smtp.envelope.from" not in dict(telemetry.one_span("smtp send").attributes or {})


def test_capture_environment_variable(
    telemetry: Telemetry, server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_SMTP_CAPTURE_ADDRESSES", "TRUE")
    instrumentor = SmtpInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.tracer_provider)
    try:
        with smtplib.SMTP("127.0.0.1", server.port) as client:
            client.sendmail("a@example.com", ["b@example.com"], RAW)
    finally:
        instrumentor.uninstrument()
    attributes = dict(telemetry.one_span("smtp send").attributes or {})
    assert attributes["smtp.envelope.from"] == "a@example.com"


def test_uninstrument_mid_transaction_ends_span(
    telemetry: Telemetry, server: RecordingServer
) -> None:
    instrumentor = SmtpInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.tracer_provider)
    client = smtplib.SMTP("127.0.0.1", server.port)
    client.ehlo()
    client.mail("a@example.com")
    client.rcpt("b@example.com")
    instrumentor.uninstrument()
    span = telemetry.one_span("smtp send")
    assert [event.name for event in span.events] == ["smtp.uninstrumented"]
    assert client.data(RAW)[0] == 250
    client.quit()
    assert server.messages[0].content == RAW
    assert len(telemetry.spans("smtp send")) == 1
