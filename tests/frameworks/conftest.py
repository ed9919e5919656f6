"""Fixtures for the framework tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.smtpserver import RecordingServer


@pytest.fixture
def django_smtp(server: RecordingServer) -> Iterator[RecordingServer]:
    """The recording server, as the SMTP server of the Django test project."""
    pytest.importorskip("django")
    from django.test.utils import override_settings

    from tests.frameworks import django_site

    django_site.configure()
    with override_settings(EMAIL_PORT=server.port):
        yield server
