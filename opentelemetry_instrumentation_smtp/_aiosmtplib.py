"""The aiosmtplib adapter (being written): wraps nothing yet."""

from __future__ import annotations

from opentelemetry_instrumentation_smtp.settings import Settings


def instrument_aiosmtplib(settings: Settings) -> bool:
    """Wrap aiosmtplib when a supported version is importable; return whether it was."""
    return False


def uninstrument_aiosmtplib() -> None:
    """Undo ``instrument_aiosmtplib``."""
