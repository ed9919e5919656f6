"""Delivery spans from Postfix's log, joined to the milter's traces by queue id.

The milter process calls :func:`add_arguments` while it builds its argument parser and
:func:`start` once the SDK is configured. ``start`` returns the callback that the milter
calls once per message with its queue id and span context, the coroutines that the milter
runs as tasks until shutdown, and an async close function for shutdown.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import SpanContext, TracerProvider

from opentelemetry_instrumentation_smtp.milter.delivery.follower import (
    DEFAULT_POLL_INTERVAL_SECONDS,
)
from opentelemetry_instrumentation_smtp.milter.delivery.prefix import load_timezone
from opentelemetry_instrumentation_smtp.milter.delivery.processor import (
    DEFAULT_UNMATCHED_DELAY_SECONDS,
)
from opentelemetry_instrumentation_smtp.milter.delivery.queue_map import (
    DEFAULT_HANDOFF_TTL_SECONDS,
    DEFAULT_MAX_ENTRIES,
    DEFAULT_TTL_SECONDS,
)

__all__ = ["MessageDoneCallback", "add_arguments", "start"]

MessageDoneCallback = Callable[[str, SpanContext], None]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seconds(text: str, *, allow_zero: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of seconds: {text!r}") from None
    if allow_zero and not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 seconds or more, got {text}")
    if not allow_zero and not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value


def _positive_seconds(text: str) -> float:
    return _seconds(text, allow_zero=False)


def _non_negative_seconds(text: str) -> float:
    return _seconds(text, allow_zero=True)


def _timezone_name(text: str) -> str:
    try:
        load_timezone(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of the Postfix log follower to the milter's argument parser."""
    group = parser.add_argument_group(
        "delivery spans from the Postfix log",
        "Follow Postfix's log and turn each delivery attempt into an 'smtp deliver' span "
        "in the trace of the message that the milter handled.",
    )

    group.add_argument(
        "--postfix-log",
        metavar="PATH",
        help="Postfix log file to follow (its maillog_file, or the syslog file that receives "
        "the mail facility), or '-' for standard input, such as 'journalctl --follow "
        "--lines=0 --output=short-iso-precise SYSLOG_FACILITY=2' piped in (keep the "
        "timestamps: lines without one end their span when they are read). "
        "Off when not given.",
    )

    group.add_argument(
        "--postfix-log-from-start",
        action="store_true",
        help="read the file from its start instead of its end",
    )

    group.add_argument(
        "--postfix-log-timezone",
        metavar="ZONE",
        type=_timezone_name,
        help="IANA time zone of log timestamps that carry no UTC offset, such as "
        "'Europe/Berlin' (default: this machine's local time zone)",
    )

    group.add_argument(
        "--postfix-log-poll-interval",
        metavar="SECONDS",
        type=_positive_seconds,
        default=DEFAULT_POLL_INTERVAL_SECONDS,
        help="how often to check the file for new lines and rotation, in seconds "
        "(default: %(default)s)",
    )

    group.add_argument(
        "--unmatched",
        choices=("span", "skip"),
        default="span",
        help="what to do with delivery lines of messages that the milter did not register: "
        "'span' records them as spans in new traces, 'skip' records only their metrics "
        "(default: %(default)s)",
    )

    group.add_argument(
        "--unmatched-delay",
        metavar="SECONDS",
        type=_non_negative_seconds,
        default=DEFAULT_UNMATCHED_DELAY_SECONDS,
        help="how long a line with an unknown queue id waits for the id to be registered "
        "before it counts as unmatched, in seconds (default: %(default)s)",
    )

    group.add_argument(
        "--queue-map-size",
        metavar="N",
        type=_positive_int,
        default=DEFAULT_MAX_ENTRIES,
        help="maximum number of queue ids kept; the oldest is dropped first (default: %(default)s)",
    )

    group.add_argument(
        "--queue-map-ttl",
        metavar="SECONDS",
        type=_positive_seconds,
        default=DEFAULT_TTL_SECONDS,
        help="time a queue id is kept after the milter registered it, in seconds; keep it "
        "above Postfix's maximal_queue_lifetime (default: %(default)s, 6 days)",
    )

    group.add_argument(
        "--handoff-ttl",
        metavar="SECONDS",
        type=_positive_seconds,
        default=DEFAULT_HANDOFF_TTL_SECONDS,
        help="time a next hop's queue id from a '250 ... queued as ID' reply is kept until a "
        "log line uses it, in seconds (default: %(default)s)",
    )

    group.add_argument(
        "--metric-recipient-domain",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="add the recipient's domain to the smtp.delivery.attempts metric; turn it off "
        "when the number of distinct domains is too large for the metrics backend "
        "(default: on)",
    )


def start(
    args: argparse.Namespace,
    tracer_provider: TracerProvider | None,
    meter_provider: MeterProvider | None,
) -> tuple[
    MessageDoneCallback,
    list[Coroutine[Any, Any, None]],
    Callable[[], Awaitable[None]],
]:
    """Set up the follower from parsed ``args``.

    Returns the per-message callback, the coroutines to run as tasks until shutdown, and
    the async close function. Without ``--postfix-log`` all three do nothing.
    """
    path = getattr(args, "postfix_log", None)
    if not path:
        return _ignore_message, [], _close_nothing

    from opentelemetry_instrumentation_smtp.milter.delivery.service import DeliveryService

    service = DeliveryService.from_arguments(args, tracer_provider, meter_provider)
    return service.on_message_done, service.coroutines(), service.close


def _ignore_message(queue_id: str, span_context: SpanContext) -> None:
    return None


async def _close_nothing() -> None:
    return None
