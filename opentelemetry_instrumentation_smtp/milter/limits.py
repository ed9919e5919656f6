"""Guards against running out of file descriptors: the open-file limit and log rate limits."""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Callable
from typing import Any

_logger = logging.getLogger(__name__)

# File descriptors that the process needs besides MTA connections: listening sockets,
# exporter connections, the Postfix log, standard streams. An estimate with a wide margin.
RESERVED_FILE_DESCRIPTORS = 64
REPEAT_LOG_INTERVAL_SECONDS = 60.0
# The context message of asyncio's event loop when accept() fails with EMFILE, ENFILE,
# ENOBUFS or ENOMEM (CPython 3.8 to 3.13, selector_events.py).
_ACCEPT_FAILED = "socket.accept() out of system resource"


class RateLimitedLog:
    """Warning logger that logs at most once per interval.

    The next warning logged after a quiet interval includes the count of those suppressed.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = REPEAT_LOG_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._last: float | None = None
        self._repeats = 0

    def warning(self, message: str, *args: object) -> None:
        """Log ``message % args`` unless this warning was logged less than an interval ago."""
        now = self._clock()
        if self._last is not None and now - self._last < self._interval:
            self._repeats += 1
            return
        if self._repeats:
            message += " (%d more times in the last %.0f s)"
            args = (*args, self._repeats, now - self._last if self._last is not None else 0.0)
        self._logger.warning(message, *args)
        self._last = now
        self._repeats = 0


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the soft limit in effect."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if resource.RLIM_INFINITY in (soft, hard) or soft >= hard:
        # NOTE: an infinite hard limit is left alone, because Linux rejects an infinite
        # soft limit for open files. The soft limit then stays as it was.
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError) as error:
        _logger.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, error)
        return soft
    _logger.info("raised the open-file limit from %d to %d", soft, hard)
    return hard


def check_max_connections(max_connections: int, open_file_limit: int) -> None:
    """Warn when ``max_connections`` connections would not fit in the open-file limit."""
    if open_file_limit == resource.RLIM_INFINITY:
        return
    available = open_file_limit - RESERVED_FILE_DESCRIPTORS
    if max_connections > available:
        _logger.warning(
            "--max-connections %d exceeds the %d file descriptors that the open-file limit "
            "of %d leaves for MTA connections; lower it or raise LimitNOFILE",
            max_connections,
            max(available, 0),
            open_file_limit,
        )


class AcceptErrorHandler:
    """An event loop exception handler that rate-limits asyncio's accept() failures.

    When the process runs out of file descriptors, asyncio logs a traceback for every
    failed accept() and retries each second, which floods the log. This handler logs one
    line per interval instead and passes every other error to the previous handler.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._previous = loop.get_exception_handler()
        self._log = RateLimitedLog(_logger)

    def install(self) -> None:
        """Make this the loop's exception handler."""
        self._loop.set_exception_handler(self)

    def uninstall(self) -> None:
        """Restore the previous handler, unless another one replaced this one meanwhile."""
        if self._loop.get_exception_handler() is self:
            self._loop.set_exception_handler(self._previous)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") == _ACCEPT_FAILED:
            self._log.warning(
                "cannot accept MTA connections: %s; asyncio retries every second",
                context.get("exception"),
            )
            return
        if self._previous is not None:
            self._previous(loop, context)
        else:
            loop.default_exception_handler(context)
