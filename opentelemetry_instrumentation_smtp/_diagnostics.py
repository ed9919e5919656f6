"""Reporting of internal errors without letting them reach the application's mail.

Every failure inside the instrumentation (a user hook, a propagator, attribute
extraction) is caught and logged here. Logging can itself send mail, for example through
``logging.handlers.SMTPHandler`` on the root logger, so while a diagnostic is being
logged, every send in the same context is passed through untraced. That makes a
diagnostic unable to start another traced send and so unable to loop.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

_REPORTING: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "opentelemetry_smtp_reporting", default=False
)

# After this many reports of the same error site, only every 1000th is logged.
_FULL_REPORTS_PER_SITE = 10

_counts: dict[str, int] = {}
_counts_lock = threading.Lock()

T = TypeVar("T")


def is_reporting() -> bool:
    """Tell whether the current context is inside the logging of a diagnostic."""
    return _REPORTING.get()


@contextmanager
def _reporting() -> Iterator[None]:
    token = _REPORTING.set(True)
    try:
        yield
    finally:
        _REPORTING.reset(token)


def report(site: str, exc: BaseException | None = None) -> None:
    """Log an internal error at ``site`` (a short description such as "request_hook").

    Repeats of one site are rate-limited. The exception's traceback is attached; it
    never contains the message body because no code here formats the body into an error.
    """
    with _counts_lock:
        count = _counts.get(site, 0) + 1
        _counts[site] = count
    if count > _FULL_REPORTS_PER_SITE and count % 1000 != 0:
        return
    try:
        with _reporting():
            logger.warning(
                "OpenTelemetry SMTP instrumentation error in %s (occurrence %d); "
                "the message is sent without it",
                site,
                count,
                exc_info=exc,
            )
    except Exception:
        # A broken logging setup must not break mail.
        pass


def guarded(site: str, function: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """Call ``function`` and return its result, or report the error and return None."""
    try:
        return function(*args, **kwargs)
    except Exception as exc:
        # Every internal failure is contained here, so that the send goes on.
        report(site, exc)
        return None


def error_counts() -> dict[str, int]:
    """Return a copy of the number of internal errors seen per site (for tests and debugging)."""
    with _counts_lock:
        return dict(_counts)
