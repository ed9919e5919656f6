"""Helpers for reading what the in-memory SDK collected."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.metrics.export import InMemoryMetricReader


def metric_points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    """Return the data points of metric ``name``, or [] when it has none."""
    data = reader.get_metrics_data()
    if data is None:
        return []
    points: list[Any] = []
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name == name:
                    points.extend(metric.data.data_points)
    return points


def counter_values(reader: InMemoryMetricReader, name: str, key: str) -> dict[Any, float]:
    """Return a counter's values by the value of attribute ``key``."""
    return {dict(point.attributes).get(key): point.value for point in metric_points(reader, name)}
