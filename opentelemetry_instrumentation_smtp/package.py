"""Package metadata read by ``BaseInstrumentor`` and ``opentelemetry-bootstrap``."""

# smtplib is in the standard library, so nothing has to be installed for the core
# instrumentation. aiosmtplib is instrumented when it is importable and is checked
# separately, so that a missing or unsupported aiosmtplib never disables smtplib.
_instruments: tuple[str, ...] = ()

# The range of aiosmtplib versions that the aiosmtplib adapter supports.
_aiosmtplib_instruments = "aiosmtplib >= 2.0, < 6"

_supports_metrics = True
