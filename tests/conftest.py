"""Shared fixtures: the SDK with in-memory exporters, the instrumentor, a recording server."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import trustme
from hypothesis import settings
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from opentelemetry_instrumentation_smtp import SmtpInstrumentor
from tests.smtpserver import RecordingServer

# Hypothesis' default deadline of 200 ms per example fails tests on a loaded 2-core CI
# machine for reasons unrelated to the code, so no deadline applies. print_blob lets a
# real failure be reproduced with @reproduce_failure.
settings.register_profile("project", deadline=None, print_blob=True)
settings.load_profile("project")


@dataclass
class Telemetry:
    """The SDK providers that a test instruments with, and what they collected."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    exporter: InMemorySpanExporter
    metric_reader: InMemoryMetricReader

    @property
    def tracer(self) -> trace.Tracer:
        return self.tracer_provider.get_tracer("tests")

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        spans = list(self.exporter.get_finished_spans())
        return [s for s in spans if name is None or s.name == name]

    def one_span(self, name: str) -> ReadableSpan:
        spans = self.spans(name)
        assert len(spans) == 1, [s.name for s in self.spans()]
        return spans[0]


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield Telemetry(tracer_provider, meter_provider, exporter, reader)
    tracer_provider.shutdown()
    meter_provider.shutdown()


@pytest.fixture
def instrument(telemetry: Telemetry) -> Iterator[SmtpInstrumentor]:
    """Instrument with the test providers; extra keyword arguments via ``instrument.again``."""
    instrumentor = SmtpInstrumentor()
    instrumentor.instrument(
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    )
    yield instrumentor
    instrumentor.uninstrument()


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    recording = RecordingServer().start()
    yield recording
    recording.stop()


@pytest.fixture(autouse=True)
def _instrumentation_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="opentelemetry_instrumentation_smtp")


@pytest.fixture(scope="session")
def authority() -> trustme.CA:
    """A test certificate authority for TLS servers on 127.0.0.1."""
    return trustme.CA()


@pytest.fixture
def server_context(authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture
def client_context(authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    authority.configure_trust(context)
    return context


@pytest.fixture
def tls_server(server_context: ssl.SSLContext) -> Iterator[RecordingServer]:
    """A server with implicit TLS, as SMTP_SSL expects."""
    recording = RecordingServer(ssl_context=server_context).start()
    yield recording
    recording.stop()
