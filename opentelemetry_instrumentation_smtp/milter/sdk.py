"""Configuration of the OpenTelemetry SDK from the standard ``OTEL_*`` environment variables.

Honoured variables:

- ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` (resource);
- ``OTEL_TRACES_SAMPLER`` and ``OTEL_TRACES_SAMPLER_ARG`` (read by the SDK's
  ``TracerProvider``);
- ``OTEL_TRACES_EXPORTER`` and ``OTEL_METRICS_EXPORTER`` (``otlp``, ``console``, ``none``
  or any installed exporter's entry-point name, comma-separated);
- ``OTEL_EXPORTER_OTLP_*`` (read by the exporters);
- ``OTEL_BSP_MAX_QUEUE_SIZE``, ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` and
  ``OTEL_BSP_SCHEDULE_DELAY`` (milliseconds);
- ``OTEL_METRIC_EXPORT_INTERVAL`` (read by the metric reader).
"""

from __future__ import annotations

import logging
import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter

from .export import (
    DEFAULT_MAX_EXPORT_BATCH_SIZE,
    DEFAULT_MAX_QUEUE_SIZE,
    DEFAULT_SCHEDULE_DELAY,
    BoundedBatchSpanProcessor,
)

_logger = logging.getLogger(__name__)

DEFAULT_SERVICE_NAME = "opentelemetry-smtp-milter"


class ConfigurationError(Exception):
    """An ``OTEL_*`` variable names an exporter that is not installed, or has a bad value."""


@dataclass
class Providers:
    """The configured providers; :meth:`shutdown` flushes and stops both."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def shutdown(self) -> None:
        """Export what is queued and stop the exporters."""
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def _names(environ: Mapping[str, str], variable: str) -> list[str]:
    value = environ.get(variable, "otlp")
    return [name.strip() for name in value.split(",") if name.strip() and name.strip() != "none"]


def _otlp_entry_point(environ: Mapping[str, str], signal: str) -> str:
    protocol = environ.get(
        f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL", environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
    )
    return "otlp_proto_grpc" if protocol == "grpc" else "otlp_proto_http"


def _load_exporter(group: str, name: str, variable: str) -> Any:
    found = entry_points(group=group, name=name)
    if not found:
        raise ConfigurationError(
            f"{variable} names exporter {name!r}, which is not installed: "
            f"install its package or use one of "
            f"{sorted(point.name for point in entry_points(group=group))}"
        )
    return next(iter(found)).load()()


def _int_variable(environ: Mapping[str, str], variable: str, default: int) -> int:
    text = environ.get(variable)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise ConfigurationError(f"invalid {variable} value {text!r}: use a whole number") from None


def span_exporters(environ: Mapping[str, str], console: bool) -> list[SpanExporter]:
    """Create the span exporters that ``OTEL_TRACES_EXPORTER`` and ``--console`` select."""
    exporters: list[SpanExporter] = []
    for name in _names(environ, "OTEL_TRACES_EXPORTER"):
        if name == "console":
            exporters.append(ConsoleSpanExporter())
            continue
        entry_point = _otlp_entry_point(environ, "TRACES") if name == "otlp" else name
        exporters.append(
            _load_exporter("opentelemetry_traces_exporter", entry_point, "OTEL_TRACES_EXPORTER")
        )
    if console and not any(isinstance(exporter, ConsoleSpanExporter) for exporter in exporters):
        exporters.append(ConsoleSpanExporter())
    return exporters


def metric_readers(environ: Mapping[str, str]) -> list[MetricReader]:
    """Create a periodic reader for each exporter that ``OTEL_METRICS_EXPORTER`` selects."""
    readers: list[MetricReader] = []
    for name in _names(environ, "OTEL_METRICS_EXPORTER"):
        exporter: MetricExporter
        if name == "console":
            exporter = ConsoleMetricExporter()
        else:
            entry_point = _otlp_entry_point(environ, "METRICS") if name == "otlp" else name
            exporter = _load_exporter(
                "opentelemetry_metrics_exporter", entry_point, "OTEL_METRICS_EXPORTER"
            )
        readers.append(PeriodicExportingMetricReader(exporter))
    return readers


def resource(environ: Mapping[str, str]) -> Resource:
    """Build the resource; the service name defaults to ``opentelemetry-smtp-milter``."""
    attributes: dict[str, str] = {}
    for item in environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, separator, value = item.partition("=")
        if separator and key.strip():
            attributes[key.strip()] = urllib.parse.unquote(value.strip())
    if environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = environ["OTEL_SERVICE_NAME"]
    attributes.setdefault("service.name", DEFAULT_SERVICE_NAME)
    # Values given here take precedence over those Resource.create reads from os.environ.
    return Resource.create(attributes)


def configure(console: bool = False, environ: Mapping[str, str] | None = None) -> Providers:
    """Create providers from the environment, without registering them globally."""
    environ = os.environ if environ is None else environ
    service_resource = resource(environ)
    meter_provider = MeterProvider(
        resource=service_resource, metric_readers=metric_readers(environ)
    )
    tracer_provider = TracerProvider(resource=service_resource)
    delay_ms = _int_variable(environ, "OTEL_BSP_SCHEDULE_DELAY", int(DEFAULT_SCHEDULE_DELAY * 1000))
    for exporter in span_exporters(environ, console):
        tracer_provider.add_span_processor(
            BoundedBatchSpanProcessor(
                exporter,
                max_queue_size=_int_variable(
                    environ, "OTEL_BSP_MAX_QUEUE_SIZE", DEFAULT_MAX_QUEUE_SIZE
                ),
                max_export_batch_size=_int_variable(
                    environ, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", DEFAULT_MAX_EXPORT_BATCH_SIZE
                ),
                schedule_delay=delay_ms / 1000,
                meter_provider=meter_provider,
            )
        )
    return Providers(tracer_provider, meter_provider)
