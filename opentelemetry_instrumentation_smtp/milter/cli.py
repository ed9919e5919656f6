"""The ``opentelemetry-smtp-milter`` command: run the tracing milter until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from types import ModuleType
from typing import Any

from . import arguments
from .config import (
    DEFAULT_FRAME_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_SHUTDOWN_TIMEOUT,
    HeaderPolicy,
    MilterConfig,
)
from .limits import check_max_connections, raise_open_file_limit
from .listen import ListenAddress
from .protocol import DEFAULT_MAX_FRAME_SIZE
from .sdk import ConfigurationError, Providers, configure
from .server import DEFAULT_SOCKET_MODE, MilterServer
from .tracing import MessageDoneCallback

_logger = logging.getLogger(__name__)

DEFAULT_LISTEN = "inet:127.0.0.1:8895"
DELIVERY_MODULE = "opentelemetry_instrumentation_smtp.milter.delivery"
FLUSH_TIMEOUT_MILLIS = 10_000

DeliveryStart = tuple[
    MessageDoneCallback, list[Coroutine[Any, Any, None]], Callable[[], Awaitable[None]]
]


def _listen_address(text: str) -> str:
    try:
        ListenAddress.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _octal(text: str) -> int:
    try:
        return int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid mode {text!r}: use octal, such as 660") from None


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of the milter's own options."""
    parser = argparse.ArgumentParser(
        prog="opentelemetry-smtp-milter",
        description=(
            "Milter for Postfix and Sendmail that continues the sender's trace: one span per "
            "message, parented by the message's traceparent header. The OpenTelemetry SDK is "
            "configured from the standard OTEL_* environment variables."
        ),
    )

    parser.add_argument(
        "--listen",
        action="append",
        type=_listen_address,
        metavar="ADDRESS",
        help=f"socket to accept MTA connections on: inet:HOST:PORT, inet6:HOST:PORT or "
        f"unix:PATH; repeat for several (default: {DEFAULT_LISTEN})",
    )
    parser.add_argument(
        "--socket-mode",
        type=_octal,
        default=DEFAULT_SOCKET_MODE,
        metavar="MODE",
        help="permissions of Unix sockets, in octal (default: 660)",
    )
    parser.add_argument(
        "--console", action="store_true", help="also print each span to standard output"
    )

    policy = parser.add_argument_group("header policies (all off by default)")
    policy.add_argument(
        "--inject-traceparent",
        action="store_true",
        help="add a traceparent header for the milter's span to messages that have none",
    )
    policy.add_argument(
        "--rewrite-traceparent",
        action="store_true",
        help="replace the message's traceparent with one for the milter's span, so that "
        "the next hop continues the trace below the MTA",
    )
    policy.add_argument(
        "--strip-external",
        action="store_true",
        help="remove traceparent and tracestate when a recipient's domain is not an "
        "internal domain; this takes precedence over the other policies",
    )
    policy.add_argument(
        "--internal-domain",
        action="append",
        type=arguments.domains,
        default=[],
        metavar="DOMAIN[,DOMAIN...]",
        help="a domain that counts as internal, with its subdomains; repeatable. A leading "
        "dot, as in Postfix's .example.com, means the same as without",
    )

    parser.add_argument(
        "--record-addresses",
        action="store_true",
        help="record envelope addresses on spans and log lines (personal data; off by default)",
    )

    limits = parser.add_argument_group("limits")
    limits.add_argument(
        "--idle-timeout",
        type=arguments.positive_seconds,
        default=DEFAULT_IDLE_TIMEOUT,
        metavar="SECONDS",
        help="close an MTA connection that sends nothing for this long "
        f"(default: {DEFAULT_IDLE_TIMEOUT:.0f})",
    )
    limits.add_argument(
        "--frame-timeout",
        type=arguments.positive_seconds,
        default=DEFAULT_FRAME_TIMEOUT,
        metavar="SECONDS",
        help="close an MTA connection that sends nothing for this long while a frame is "
        "incomplete; each read restarts the timer "
        f"(default: {DEFAULT_FRAME_TIMEOUT:.0f})",
    )
    limits.add_argument(
        "--shutdown-timeout",
        type=arguments.non_negative_seconds,
        default=DEFAULT_SHUTDOWN_TIMEOUT,
        metavar="SECONDS",
        help="on SIGTERM, wait this long for messages in progress to end; 0 aborts them "
        "at once "
        f"(default: {DEFAULT_SHUTDOWN_TIMEOUT:.0f})",
    )
    limits.add_argument(
        "--max-frame-size",
        type=arguments.max_frame_size,
        default=DEFAULT_MAX_FRAME_SIZE,
        metavar="BYTES",
        help="close an MTA connection that announces a larger frame; at least "
        f"{arguments.MIN_MAX_FRAME_SIZE}, Postfix's largest body chunk "
        f"(default: {DEFAULT_MAX_FRAME_SIZE})",
    )
    limits.add_argument(
        "--max-connections",
        type=arguments.max_connections,
        default=DEFAULT_MAX_CONNECTIONS,
        metavar="N",
        help="close new MTA connections at once while this many are open; each takes one "
        f"file descriptor (default: {DEFAULT_MAX_CONNECTIONS})",
    )

    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="level of the log lines written to standard error (default: INFO)",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> MilterConfig:
    """Build the milter configuration from parsed arguments."""
    domains = frozenset(domain for group in args.internal_domain for domain in group)
    return MilterConfig(
        policy=HeaderPolicy(
            inject_traceparent=args.inject_traceparent,
            rewrite_traceparent=args.rewrite_traceparent,
            strip_external=args.strip_external,
            internal_domains=domains,
        ),
        record_addresses=args.record_addresses,
        idle_timeout=args.idle_timeout,
        frame_timeout=args.frame_timeout,
        shutdown_timeout=args.shutdown_timeout,
        max_frame_size=args.max_frame_size,
        max_connections=args.max_connections,
    )


def load_delivery() -> ModuleType | None:
    """Import the Postfix delivery-log module if it is installed, else return ``None``."""
    try:
        return importlib.import_module(DELIVERY_MODULE)
    except ModuleNotFoundError as error:
        if error.name != DELIVERY_MODULE:
            raise
        return None


async def run(
    args: argparse.Namespace,
    config: MilterConfig,
    providers: Providers,
    delivery: ModuleType | None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until ``stop`` is set (by SIGTERM or SIGINT if not given), then shut down."""
    loop = asyncio.get_running_loop()
    if stop is None:
        stop = asyncio.Event()
        for signal_number in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signal_number, stop.set)
    on_message_done: MessageDoneCallback | None = None
    background: list[asyncio.Task[None]] = []
    close_delivery: Callable[[], Awaitable[None]] | None = None
    if delivery is not None:
        started: DeliveryStart = delivery.start(
            args, providers.tracer_provider, providers.meter_provider
        )
        on_message_done, coroutines, close_delivery = started
        for coroutine in coroutines:
            name = getattr(coroutine, "__qualname__", None)
            task = loop.create_task(coroutine, name=name)
            task.add_done_callback(_report_failure)
            background.append(task)

    server = MilterServer(
        args.listen or [DEFAULT_LISTEN],
        config=config,
        tracer_provider=providers.tracer_provider,
        meter_provider=providers.meter_provider,
        on_message_done=on_message_done,
        socket_mode=args.socket_mode,
    )
    await server.start()
    await stop.wait()
    _logger.info("shutting down: no new connections; waiting for messages in progress")
    await server.close()
    if close_delivery is not None:
        await close_delivery()
    for task in background:
        task.cancel()
    for task in background:
        try:
            await task
        except asyncio.CancelledError:
            pass
        except Exception:
            # Already logged by _report_failure when the task ended.
            pass
    if not providers.tracer_provider.force_flush(FLUSH_TIMEOUT_MILLIS):
        _logger.warning("spans still queued after %d ms; they are lost", FLUSH_TIMEOUT_MILLIS)
    _logger.info("milter stopped")


def _report_failure(task: asyncio.Task[None]) -> None:
    """Log a delivery task that ended with an error, when it ends."""
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        _logger.error(
            "delivery task %s stopped: %s: %s; no more delivery spans until the milter restarts",
            task.get_name(),
            type(error).__name__,
            error,
            exc_info=error,
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the milter; return the process exit status."""
    parser = build_parser()
    delivery = load_delivery()
    if delivery is not None:
        delivery.add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = config_from_args(args)
    check_max_connections(config.max_connections, raise_open_file_limit())
    if config.policy.strip_external and not config.policy.internal_domains:
        _logger.warning(
            "--strip-external without --internal-domain strips trace headers from every message"
        )
    try:
        providers = configure(console=args.console)
    except ConfigurationError as error:
        parser.exit(2, f"opentelemetry-smtp-milter: error: {error}\n")
    try:
        asyncio.run(run(args, config, providers, delivery))
    except OSError as error:
        _logger.error("cannot start the milter: %s", error)
        return 1
    finally:
        providers.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
