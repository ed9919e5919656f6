"""Settings of the milter that the command line sets and the server and tracing layers read."""

from __future__ import annotations

from dataclasses import dataclass, field

# Postfix waits up to smtpd_timeout (300 s by default) for the SMTP client's next command,
# and the milter connection is idle meanwhile, so the idle limit must be longer than that.
DEFAULT_IDLE_TIMEOUT = 600.0
# Once a frame has started, the rest of it is on its way from a local MTA: 30 s is
# Postfix's milter_command_timeout default.
DEFAULT_FRAME_TIMEOUT = 30.0
DEFAULT_SHUTDOWN_TIMEOUT = 10.0
# Each Postfix smtpd or cleanup process keeps one connection per milter open. Postfix's
# default_process_limit is 100, so this leaves room for several such services.
DEFAULT_MAX_CONNECTIONS = 512


@dataclass(frozen=True)
class HeaderPolicy:
    """Changes the milter makes to trace header fields. All are off by default.

    ``inject_traceparent`` adds a ``traceparent`` for the milter's span to messages that
    have none. ``rewrite_traceparent`` replaces the message's ``traceparent`` with one for
    the milter's span. ``strip_external`` removes ``traceparent`` and ``tracestate`` when a
    recipient's domain is not in ``internal_domains``, and then no other change is made.
    """

    inject_traceparent: bool = False
    rewrite_traceparent: bool = False
    strip_external: bool = False
    internal_domains: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class MilterConfig:
    """Everything the milter server needs besides its sockets and providers.

    Timeouts are in seconds. ``record_addresses`` puts envelope addresses on spans and
    log lines, which are personal data and off by default.
    """

    policy: HeaderPolicy = field(default_factory=HeaderPolicy)
    record_addresses: bool = False
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    frame_timeout: float = DEFAULT_FRAME_TIMEOUT
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    max_frame_size: int = 1024 * 1024
    # New connections beyond this many are closed at once.
    max_connections: int = DEFAULT_MAX_CONNECTIONS
