"""Argument types of the milter's command line: each rejects a value with a clear message."""

from __future__ import annotations

import argparse
import math
import re

from .protocol import MILTER_CHUNK_SIZE

# The length field counts the command byte, so a full body chunk is a frame of this length.
MIN_MAX_FRAME_SIZE = MILTER_CHUNK_SIZE + 1
# The protocol's length field is an unsigned 32-bit integer.
MAX_MAX_FRAME_SIZE = 2**32 - 1
MAX_CONNECTIONS_LIMIT = 1_000_000

_DOMAIN_LABELS = re.compile(r"[^\s.@,]+(\.[^\s.@,]+)*")


def positive_seconds(text: str) -> float:
    """Parse a finite number of seconds greater than 0."""
    value = _float(text)
    if value is None or not value > 0:
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}: use a finite number of seconds greater than 0"
        )
    return value


def non_negative_seconds(text: str) -> float:
    """Parse a finite number of seconds, 0 or more."""
    value = _float(text)
    if value is None or not value >= 0:
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}: use a finite number of seconds, 0 or more"
        )
    return value


def max_frame_size(text: str) -> int:
    """Parse a frame size limit that still admits Postfix's largest body chunk."""
    return _integer(text, MIN_MAX_FRAME_SIZE, MAX_MAX_FRAME_SIZE)


def max_connections(text: str) -> int:
    """Parse a limit on open MTA connections."""
    return _integer(text, 1, MAX_CONNECTIONS_LIMIT)


def domains(text: str) -> list[str]:
    """Parse a comma-separated list of domains, lower-cased.

    A leading dot, as in Postfix's ``.example.com``, and a trailing dot are removed: every
    domain already matches its subdomains.
    """
    parsed = []
    for item in text.split(","):
        domain = item.strip().lower()
        if not domain:
            continue
        domain = domain.removeprefix(".").removesuffix(".")
        if not _DOMAIN_LABELS.fullmatch(domain):
            raise argparse.ArgumentTypeError(
                f"invalid value {item.strip()!r}: use a domain such as example.com or "
                ".example.com, without '@' or empty labels"
            )
        parsed.append(domain)
    return parsed


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _integer(text: str, minimum: int, maximum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if not minimum <= value <= maximum:
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}: use an integer from {minimum} to {maximum}"
        )
    return value
