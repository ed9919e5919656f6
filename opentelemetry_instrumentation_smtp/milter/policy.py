"""Header policies: which trace header fields the milter adds, changes or removes.

The decision depends only on the message and the configuration, so it is made before the
span is created and recorded on it. The changes themselves need the span's context. The
message body is never changed.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from opentelemetry.trace import SpanContext

from .config import HeaderPolicy
from .trace_headers import TRACEPARENT, TRACESTATE, TraceContextStatus, format_traceparent


class PolicyAction(str, enum.Enum):
    """Action a header policy took on a message, recorded as ``smtp.milter.header_action``."""

    NONE = "none"
    INSERTED = "inserted"
    REWRITTEN = "rewritten"
    STRIPPED = "stripped"


@dataclass(frozen=True)
class HeaderChange:
    """One header modification to send at end of message.

    ``occurrence`` is ``None`` for a field added at the end of the header section.
    Otherwise it is the 1-based occurrence of ``name`` to change, and an empty ``value``
    deletes that field.
    """

    name: str
    value: str
    occurrence: int | None = None


def recipient_domain(address: str) -> str | None:
    """Return the lower-case domain of an envelope address such as ``<user@Example.COM>``."""
    address = address.strip().removeprefix("<").removesuffix(">")
    # A source route ("@relay1,@relay2:user@example.com") ends at the last colon.
    if address.startswith("@") and ":" in address:
        address = address.rsplit(":", 1)[1]
    if "@" not in address:
        return None
    domain = address.rsplit("@", 1)[1].strip().rstrip(".").lower()
    return domain or None


def is_internal(domain: str | None, internal_domains: Iterable[str]) -> bool:
    """Return True if ``domain`` is one of ``internal_domains`` or a subdomain of one.

    An address without a domain counts as external, so that trace headers are stripped
    whenever the milter cannot tell where the message goes.
    """
    if domain is None:
        return False
    return any(
        domain == internal or domain.endswith("." + internal) for internal in internal_domains
    )


def decide(
    policy: HeaderPolicy,
    headers: Sequence[tuple[str, str]],
    recipients: Sequence[str],
    status: TraceContextStatus,
) -> PolicyAction:
    """Choose the policy action for one message. Stripping takes precedence."""
    if policy.strip_external:
        domains = [recipient_domain(recipient) for recipient in recipients]
        if not all(is_internal(domain, policy.internal_domains) for domain in domains):
            if any(_count(headers, name) for name in (TRACEPARENT, TRACESTATE)):
                return PolicyAction.STRIPPED
            return PolicyAction.NONE
    if policy.rewrite_traceparent and status is not TraceContextStatus.ABSENT:
        return PolicyAction.REWRITTEN
    if policy.inject_traceparent and status is TraceContextStatus.ABSENT:
        return PolicyAction.INSERTED
    return PolicyAction.NONE


def header_changes(
    action: PolicyAction, headers: Sequence[tuple[str, str]], span_context: SpanContext
) -> list[HeaderChange]:
    """List the header modifications that carry out ``action``.

    Fields are deleted from the last occurrence to the first, so that the MTA's count of
    the remaining occurrences does not shift under a later change.
    """
    if action is PolicyAction.INSERTED:
        return [HeaderChange(TRACEPARENT, format_traceparent(span_context))]
    if action is PolicyAction.REWRITTEN:
        count = _count(headers, TRACEPARENT)
        changes = [HeaderChange(TRACEPARENT, "", index) for index in range(count, 1, -1)]
        changes.append(HeaderChange(TRACEPARENT, format_traceparent(span_context), 1))
        return changes
    if action is PolicyAction.STRIPPED:
        changes = []
        for name in (TRACEPARENT, TRACESTATE):
            count = _count(headers, name)
            changes.extend(HeaderChange(name, "", index) for index in range(count, 0, -1))
        return changes
    return []


def _count(headers: Sequence[tuple[str, str]], name: str) -> int:
    return sum(1 for header_name, _ in headers if header_name.lower() == name)
