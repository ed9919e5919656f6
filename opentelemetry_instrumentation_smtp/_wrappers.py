"""The two thin adapters that run a wrapped method around a handler's :class:`Call`.

They hold no tracing logic: a handler decides everything before the call and reacts to
its outcome afterwards. The wrapped method always runs outside any ``try`` of ours, so
its return value and its exceptions reach the caller as the same objects.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry_instrumentation_smtp._diagnostics import guarded
from opentelemetry_instrumentation_smtp.invocation import Call

Handler = Callable[[Any, tuple[Any, ...], dict[str, Any]], "Call | None"]
Wrapper = Callable[[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]


def _site(handler: Handler) -> str:
    """Name the handler in diagnostics, computed once per wrapper rather than per call."""
    return f"preparing {getattr(handler, '__name__', 'a call')}"


def sync_wrapper(handler: Handler) -> Wrapper:
    """Build a ``wrapt`` wrapper for a blocking method."""
    site = _site(handler)

    def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        call = guarded(site, handler, instance, args, kwargs)
        if call is None:
            return wrapped(*args, **kwargs)
        with call:
            result = wrapped(*call.args, **call.kwargs)
        return call.finish(result)

    return wrapper


def async_wrapper(handler: Handler) -> Wrapper:
    """Build a ``wrapt`` wrapper for a coroutine method."""
    site = _site(handler)

    async def wrapper(
        wrapped: Callable[..., Awaitable[Any]],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        call = guarded(site, handler, instance, args, kwargs)
        if call is None:
            return await wrapped(*args, **kwargs)
        with call:
            result = await wrapped(*call.args, **call.kwargs)
        return call.finish(result)

    return wrapper
