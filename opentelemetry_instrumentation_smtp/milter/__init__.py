"""A milter for Postfix and Sendmail that continues the sender's trace inside the MTA.

Install with the ``[milter]`` extra and run ``opentelemetry-smtp-milter``; docs/postfix.md
is the guide. :class:`MilterServer` runs the milter inside another program.
"""

from .config import HeaderPolicy, MilterConfig
from .server import MilterServer
from .tracing import MilterTelemetry

__all__ = ["HeaderPolicy", "MilterConfig", "MilterServer", "MilterTelemetry"]
