"""A one-view Django project, configured in-process for the framework tests.

Django's settings can be configured once per process, so every Django test module uses
:func:`configure` and changes the SMTP port per test with ``override_settings``.
"""

from __future__ import annotations

import django
from django.conf import settings
from django.core.mail import send_mail
from django.http import HttpRequest, HttpResponse
from django.urls import path

ADMINS = [("Operations", "ops@example.com")]
SERVER_EMAIL = "django@example.com"
DEFAULT_FROM_EMAIL = "app@example.com"


def configure() -> None:
    """Configure Django with the SMTP backend on 127.0.0.1 and set it up, once."""
    if settings.configured:
        return
    settings.configure(
        DEBUG=False,
        SECRET_KEY="framework-tests-only",
        ALLOWED_HOSTS=["127.0.0.1"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[],
        MIDDLEWARE=[],
        USE_TZ=True,
        EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=25,
        EMAIL_TIMEOUT=30,
        ADMINS=ADMINS,
        SERVER_EMAIL=SERVER_EMAIL,
        DEFAULT_FROM_EMAIL=DEFAULT_FROM_EMAIL,
    )
    django.setup()


def signup(request: HttpRequest) -> HttpResponse:
    """Send a welcome mail, as a sign-up view does, and return a 201 response."""
    sent = send_mail(
        "Welcome",
        "Thanks for signing up.\n",
        None,
        [request.GET.get("to", "new.user@example.com")],
    )
    return HttpResponse(f"sent {sent}\n", status=201, content_type="text/plain")


urlpatterns = [path("signup/", signup)]
