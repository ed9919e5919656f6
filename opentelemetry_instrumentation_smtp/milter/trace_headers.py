"""Reading the W3C trace context and the Message-ID from a message's header fields.

Header names match in any case. Values are unfolded (a line break followed by a space or
tab is removed, as RFC 5322 section 2.2.3 describes) and trimmed of white space, CR and
LF. Of several ``traceparent`` fields, the topmost valid one wins. Several ``tracestate``
fields are joined with commas, as the W3C Trace Context specification requires for HTTP.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
MESSAGE_ID = "message-id"

_FOLD = re.compile(r"\r?\n(?=[ \t])")
_TRIM = " \t\r\n"
_PROPAGATOR = TraceContextTextMapPropagator()


class TraceContextStatus(str, enum.Enum):
    """State of the message's trace context, recorded as ``smtp.trace_context``."""

    PRESENT = "present"
    ABSENT = "absent"
    INVALID = "invalid"


@dataclass(frozen=True)
class TraceContextResult:
    """The parent context read from the headers, and which case applied.

    ``context`` is ``None`` unless ``status`` is ``PRESENT``.
    """

    status: TraceContextStatus
    context: Context | None


def unfold(value: str) -> str:
    """Unfold a header value and trim surrounding white space, CR and LF."""
    if "\n" in value:
        value = _FOLD.sub("", value)
    return value.strip(_TRIM)


def extract_trace_context(headers: Iterable[tuple[str, str]]) -> TraceContextResult:
    """Read the parent trace context from ``(name, raw value)`` header pairs in order."""
    traceparents: list[str] = []
    tracestates: list[str] = []
    for name, value in headers:
        lowered = name.lower()
        if lowered == TRACEPARENT:
            traceparents.append(unfold(value))
        elif lowered == TRACESTATE:
            tracestates.append(unfold(value))
    if not traceparents:
        return TraceContextResult(TraceContextStatus.ABSENT, None)
    carrier = {TRACESTATE: ",".join(state for state in tracestates if state)}
    for traceparent in traceparents:
        carrier[TRACEPARENT] = traceparent
        context = _PROPAGATOR.extract(carrier)
        if trace.get_current_span(context).get_span_context().is_valid:
            return TraceContextResult(TraceContextStatus.PRESENT, context)
    return TraceContextResult(TraceContextStatus.INVALID, None)


def first_header_value(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    """Return the unfolded value of the topmost field called ``name`` (any case)."""
    lowered_name = name.lower()
    for header_name, value in headers:
        if header_name.lower() == lowered_name:
            return unfold(value)
    return None


def format_traceparent(span_context: trace.SpanContext) -> str:
    """Format a span context as a version-00 ``traceparent`` value."""
    return (
        f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}"
        f"-{int(span_context.trace_flags):02x}"
    )
