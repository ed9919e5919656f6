"""The plumbing shared by every wrapper: argument access, the call plan, the active send.

:class:`Arg` reads and replaces one argument in the form the caller passed it.
:class:`Call` carries a handler's plan for one intercepted call, and while the wrapped
method runs it makes the send's transaction and span current in this context.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.instrumentation.utils import is_instrumentation_enabled

from opentelemetry_instrumentation_smtp._diagnostics import guarded, is_reporting
from opentelemetry_instrumentation_smtp.transaction import Transaction

_ACTIVE: contextvars.ContextVar[Transaction | None] = contextvars.ContextVar(
    "opentelemetry_smtp_transaction", default=None
)


@dataclass(frozen=True)
class Arg:
    """The position (not counting self) and the name of one argument of a wrapped method."""

    position: int
    name: str

    def get(self, args: tuple[Any, ...], kwargs: dict[str, Any], default: Any = None) -> Any:
        if len(args) > self.position:
            return args[self.position]
        return kwargs.get(self.name, default)

    def replace(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], value: Any
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Return the arguments with this one replaced, passed in the form the caller used."""
        if len(args) > self.position:
            new_args = list(args)
            new_args[self.position] = value
            return tuple(new_args), kwargs
        if self.name in kwargs:
            return args, {**kwargs, self.name: value}
        # The caller relied on the default, so the value is not replaced.
        return args, kwargs


class Call:
    """One intercepted call: the arguments to use and the reactions to its outcome."""

    __slots__ = (
        "_context",
        "_context_token",
        "_on_error",
        "_on_success",
        "_token",
        "_transaction",
        "args",
        "kwargs",
    )

    def __init__(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        transaction: Transaction | None = None,
        on_success: Callable[[Any], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        context: Context | None = None,
    ) -> None:
        self.args = args
        self.kwargs = kwargs
        self._transaction = transaction
        self._on_success = on_success
        self._on_error = on_error
        self._token: contextvars.Token[Transaction | None] | None = None
        # The span's context is made current while the wrapped method runs, so that
        # spans and logs it causes belong to it.
        self._context = context
        self._context_token: object = None

    def __enter__(self) -> Call:
        if self._transaction is not None:
            self._token = _ACTIVE.set(self._transaction)
            self._transaction.calls_in_flight += 1
        if self._context is not None:
            self._context_token = otel_context.attach(self._context)
        return self

    def __exit__(self, exc_type: object, exception: BaseException | None, tb: object) -> None:
        if self._context is not None:
            otel_context.detach(self._context_token)  # type: ignore[arg-type]
            self._context_token = None
        if self._token is not None:
            _ACTIVE.reset(self._token)
            self._token = None
        if self._transaction is not None:
            self._transaction.calls_in_flight -= 1
        if exception is not None and self._on_error is not None:
            guarded("recording a failed call", self._on_error, exception)

    def finish(self, result: Any) -> Any:
        if self._on_success is not None:
            guarded("recording a reply", self._on_success, result)
        return result


# False after uninstrument(): a wrapped method that a caller bound before then (for
# example ``send = client.sendmail``) still runs the wrapper, which must then do nothing.
_instrumented = False


def set_instrumented(instrumented: bool) -> None:
    global _instrumented  # noqa: PLW0603 - one switch for every wrapper of the process
    _instrumented = instrumented


def tracing_enabled() -> bool:
    """Tell whether calls in this context are traced.

    They are not after ``uninstrument()``, inside ``suppress_instrumentation()``, or while a
    diagnostic is being logged.
    """
    return _instrumented and is_instrumentation_enabled() and not is_reporting()


def active_transaction(client: Any) -> Transaction | None:
    """Return the transaction of a send in progress on ``client`` in this context."""
    transaction = _ACTIVE.get()
    if transaction is not None and transaction.client is client and not transaction.ended:
        return transaction
    return None
