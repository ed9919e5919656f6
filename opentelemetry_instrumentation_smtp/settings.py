"""The configuration that ``SmtpInstrumentor.instrument()`` builds from its arguments."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import Span, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from opentelemetry_instrumentation_smtp.metrics import ClientMetrics

logger = logging.getLogger(__name__)

ENV_PROPAGATE = "OTEL_INSTRUMENTATION_SMTP_PROPAGATE"
ENV_CAPTURE_ADDRESSES = "OTEL_INSTRUMENTATION_SMTP_CAPTURE_ADDRESSES"

RequestHook = Callable[[Span, Any, str | None, Sequence[str] | None, Any], None]
"""``request_hook(span, client, envelope_from, envelope_to, message)``"""

ResponseHook = Callable[[Span, Any, Any], None]
"""``response_hook(span, client, result)``: the call's return value or its exception."""

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def env_flag(name: str, default: bool) -> bool:
    """Read a boolean environment variable; an invalid value is logged and ignored."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    logger.warning(
        "Invalid value %r for %s; expected true or false (or 1/0, yes/no, on/off), "
        "using the default %s",
        raw,
        name,
        default,
    )
    return default


@dataclass
class Settings:
    """Everything the wrappers need, fixed at ``instrument()`` time."""

    tracer: Tracer
    metrics: ClientMetrics
    propagator: TextMapPropagator
    propagate: bool
    capture_addresses: bool
    request_hook: RequestHook | None = None
    response_hook: ResponseHook | None = None


def build_settings(tracer: Tracer, metrics: ClientMetrics, **kwargs: Any) -> Settings:
    """Combine ``instrument()`` keyword arguments with the environment variables.

    An explicit keyword argument wins over the environment variable.
    """
    propagate = kwargs.get("propagate")
    capture = kwargs.get("capture_addresses")
    propagator = kwargs.get("propagator")
    return Settings(
        tracer=tracer,
        metrics=metrics,
        propagator=propagator if propagator is not None else TraceContextTextMapPropagator(),
        propagate=env_flag(ENV_PROPAGATE, True) if propagate is None else bool(propagate),
        capture_addresses=(
            env_flag(ENV_CAPTURE_ADDRESSES, False) if capture is None else bool(capture)
        ),
        request_hook=kwargs.get("request_hook"),
        response_hook=kwargs.get("response_hook"),
    )
