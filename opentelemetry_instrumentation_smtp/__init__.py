"""OpenTelemetry instrumentation for mail sent with smtplib and aiosmtplib.

Usage::

    from opentelemetry_instrumentation_smtp import SmtpInstrumentor

    SmtpInstrumentor().instrument()

Every message sent becomes a CLIENT span named ``smtp send`` (``lmtp send`` for LMTP),
and a W3C ``traceparent`` header line (plus ``tracestate`` when non-empty) is inserted at
the top of the message, so that the receiving MTA can continue the trace. See
docs/configuration.md for the keyword arguments and environment variables.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.instrumentation.utils import unwrap
from opentelemetry.trace import get_tracer

from opentelemetry_instrumentation_smtp import _aiosmtplib, _smtplib
from opentelemetry_instrumentation_smtp.calls import end_open_transactions
from opentelemetry_instrumentation_smtp.invocation import set_instrumented
from opentelemetry_instrumentation_smtp.metrics import ClientMetrics
from opentelemetry_instrumentation_smtp.package import _instruments, _supports_metrics
from opentelemetry_instrumentation_smtp.settings import (
    RequestHook,
    ResponseHook,
    Settings,
    build_settings,
)
from opentelemetry_instrumentation_smtp.version import __version__

__all__ = ["RequestHook", "ResponseHook", "SmtpInstrumentor", "__version__"]

logger = logging.getLogger(__name__)

_SCHEMA_URL = "https://opentelemetry.io/schemas/1.30.0"


class SmtpInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Instrument ``smtplib`` and, when it is installed, ``aiosmtplib``.

    ``instrument()`` accepts these keyword arguments:

    - ``tracer_provider``, ``meter_provider``: default to the global providers.
    - ``request_hook(span, client, envelope_from, envelope_to, message)``: called when the
      send span starts. ``message`` is what the caller passed (a ``Message``, ``str`` or
      ``bytes``); it must not be modified.
    - ``response_hook(span, client, result)``: called before the send span ends, with
      the call's return value, or with the exception that it raised.
    - ``propagate``: insert trace context header lines (default True, or the environment
      variable ``OTEL_INSTRUMENTATION_SMTP_PROPAGATE``).
    - ``propagator``: a ``TextMapPropagator`` (default: W3C Trace Context only).
    - ``capture_addresses``: record envelope addresses and keep addresses in reply texts
      (default False, or ``OTEL_INSTRUMENTATION_SMTP_CAPTURE_ADDRESSES``).

    Hooks run guarded: an exception in a hook is logged and the message is still sent.
    """

    _supports_metrics = _supports_metrics

    def __init__(self) -> None:
        super().__init__()
        self._settings: Settings | None = None
        self._aiosmtplib_wrapped = False

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        tracer = get_tracer(
            __name__,
            __version__,
            kwargs.get("tracer_provider"),
            schema_url=_SCHEMA_URL,
        )
        metrics = ClientMetrics.from_provider(kwargs.get("meter_provider"))
        settings = build_settings(tracer, metrics, **kwargs)
        self._settings = settings
        set_instrumented(True)
        _smtplib.instrument_smtplib(settings)
        self._aiosmtplib_wrapped = _aiosmtplib.instrument_aiosmtplib(settings)

    def _uninstrument(self, **kwargs: Any) -> None:
        set_instrumented(False)
        for cls, name in _smtplib.WRAPPED_METHODS:
            unwrap(cls, name)
        if self._aiosmtplib_wrapped:
            _aiosmtplib.uninstrument_aiosmtplib()
            self._aiosmtplib_wrapped = False
        end_open_transactions()
        self._settings = None
