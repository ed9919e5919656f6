"""The shared core of the wrappers: what happens around each intercepted client call.

A handler inspects a call and returns a ``Call`` from ``invocation.py`` (the arguments
to pass on and what to do with the outcome) or ``None`` to let the call through
untouched. The sync and
async adapters only run the wrapped method between ``with call:`` and ``call.finish()``,
so smtplib and aiosmtplib share every line of tracing logic.

Exactly one transaction exists per message. The outermost entry point starts it:
``send_message``, ``sendmail``, or ``mail`` for a hand-driven transaction. The inner calls
that the library makes only report to it. For example ``send_message`` calls
``sendmail``, which calls ``mail``, ``rcpt`` and ``data``, and a subclass may call
``super()``.
"""

from __future__ import annotations

import weakref
from typing import Any

from opentelemetry_instrumentation_smtp import headers
from opentelemetry_instrumentation_smtp._diagnostics import guarded, report
from opentelemetry_instrumentation_smtp.invocation import (
    Arg,
    Call,
    active_transaction,
    tracing_enabled,
)
from opentelemetry_instrumentation_smtp.settings import Settings
from opentelemetry_instrumentation_smtp.transaction import Dialect, Transaction, link_to_traceparent

# A hand-driven transaction spans several top-level calls, so it is kept on the client.
_OPEN_ATTRIBUTE = "_opentelemetry_smtp_open_transaction"
# Clients with an open hand-driven transaction, so that uninstrument() can end its span.
_OPEN_CLIENTS: weakref.WeakSet[Any] = weakref.WeakSet()


def _open_transaction(client: Any) -> Transaction | None:
    transaction = getattr(client, _OPEN_ATTRIBUTE, None)
    if isinstance(transaction, Transaction) and not transaction.ended:
        return transaction
    return None


def _current(client: Any) -> Transaction | None:
    return active_transaction(client) or _open_transaction(client)


def _close_open(client: Any) -> None:
    transaction = _open_transaction(client)
    if transaction is not None:
        transaction.abort()
    if getattr(client, _OPEN_ATTRIBUTE, None) is not None:
        setattr(client, _OPEN_ATTRIBUTE, None)


class Handlers:
    """The handlers of one client library, built from its dialect and argument layout."""

    def __init__(
        self,
        settings: Settings,
        dialect: Dialect,
        *,
        sendmail: tuple[Arg, Arg, Arg],
        send_message: tuple[Arg, Arg, Arg],
        mail: tuple[Arg, Arg],
        rcpt: Arg,
        data: Arg,
    ) -> None:
        self.settings = settings
        self.dialect = dialect
        self._sendmail = sendmail
        self._send_message = send_message
        self._mail = mail
        self._rcpt = rcpt
        self._data = data

    def _begin(self, client: Any, owner: str, traceparent: str | None) -> Transaction | None:
        links = guarded("reading the message's traceparent", link_to_traceparent, traceparent)
        return guarded(
            "starting the send span",
            Transaction,
            self.settings,
            self.dialect,
            client,
            owner,
            links or [],
        )

    # -- entry points -------------------------------------------------------------

    def sendmail(self, client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call | None:
        if not tracing_enabled():
            return None
        sender_arg, recipients_arg, message_arg = self._sendmail
        message = message_arg.get(args, kwargs)
        transaction = active_transaction(client)
        if transaction is not None:
            if transaction.payload_prepared:
                return None
            # send_message started the transaction and flattened the message; this is
            # the first point where its bytes are known. The envelope is recorded again
            # because send_message takes it from the headers when the caller gave none.
            guarded(
                "recording the envelope",
                transaction.set_envelope,
                sender_arg.get(args, kwargs),
                recipients_arg.get(args, kwargs),
            )
            return self._with_payload(transaction, message_arg, args, kwargs, message)

        _close_open(client)
        summary = None
        if isinstance(message, (str, bytes)):
            summary = guarded("inspecting the message", headers.summarize, message)
        traceparent = summary.traceparent if summary is not None else None
        transaction = self._begin(client, "sendmail", traceparent)
        if transaction is None:
            return None
        sender = sender_arg.get(args, kwargs)
        recipients = recipients_arg.get(args, kwargs)
        guarded("recording the envelope", transaction.set_envelope, sender, recipients)
        transaction.run_request_hook(sender, recipients, message)
        call = self._with_payload(transaction, message_arg, args, kwargs, message, summary)
        return self._owning_call(transaction, call.args, call.kwargs)

    def send_message(
        self, client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Call | None:
        if not tracing_enabled() or active_transaction(client) is not None:
            return None
        message_arg, sender_arg, recipients_arg = self._send_message
        message = message_arg.get(args, kwargs)
        _close_open(client)
        traceparent = guarded("inspecting the message", _traceparent_of_message, message)
        transaction = self._begin(client, "send_message", traceparent)
        if transaction is None:
            return None
        sender = sender_arg.get(args, kwargs)
        recipients = recipients_arg.get(args, kwargs)
        guarded("recording the envelope", transaction.set_envelope, sender, recipients)
        transaction.run_request_hook(sender, recipients, message)
        return self._owning_call(transaction, args, kwargs)

    def mail(self, client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call | None:
        transaction = active_transaction(client)
        if transaction is not None:
            # sendmail() declared SIZE= from the exact bytes it is about to send (its
            # own line-ending conversion included), so that count is reused for
            # smtp.message.size instead of counting the payload again.
            options = self._mail[1].get(args, kwargs)
            transaction.declared_size = guarded("reading SIZE=", _declared_size, options)
            return Call(
                args,
                kwargs,
                on_success=lambda result: transaction.on_mail_reply(
                    self.dialect.reply_from_result(result)
                ),
                on_error=lambda exc: transaction.on_mail_reply(
                    self.dialect.reply_from_exception(exc)
                ),
            )
        if not tracing_enabled():
            return None
        return self._begin_hand_driven(client, args, kwargs)

    def rcpt(self, client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call | None:
        transaction = _current(client)
        if transaction is None:
            return None
        recipient = self._rcpt.get(args, kwargs)

        def failed(exception: BaseException) -> None:
            reply = self.dialect.reply_from_exception(exception)
            transaction.on_rcpt_reply(recipient, reply)
            if reply is None and transaction.owner == "mail":
                # No reply means the connection failed (timeout, disconnect), which ends
                # a hand-driven transaction as surely as a failed DATA does.
                _forget_open(client, transaction)
                transaction.end(exception=exception)

        # The transaction is made active for the call, so that a close() that the library
        # makes on a failure (a timeout, a lost connection) does not abort it before the
        # failure is recorded.
        return Call(
            args,
            kwargs,
            transaction=transaction,
            on_success=lambda result: transaction.on_rcpt_reply(
                recipient, self.dialect.reply_from_result(result)
            ),
            on_error=failed,
        )

    def data(self, client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call | None:
        transaction = _current(client)
        if transaction is None:
            return None
        payload = self._data.get(args, kwargs)
        if not transaction.payload_prepared:
            call = self._with_payload(transaction, self._data, args, kwargs, payload)
            args, kwargs = call.args, call.kwargs
            payload = self._data.get(args, kwargs)
        hand_driven = transaction.owner == "mail"

        def succeeded(result: Any) -> None:
            transaction.on_data_reply(self.dialect.reply_from_result(result), payload)
            if hand_driven:
                _forget_open(client, transaction)
                transaction.end(result)

        def failed(exception: BaseException) -> None:
            transaction.on_data_reply(self.dialect.reply_from_exception(exception), payload)
            if hand_driven:
                _forget_open(client, transaction)
                transaction.end(exception=exception)

        return Call(args, kwargs, transaction=transaction, on_success=succeeded, on_error=failed)

    def reset(self, client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call | None:
        """Handle RSET, QUIT and close, which end a hand-driven transaction still open."""
        if active_transaction(client) is not None:
            return None
        open_transaction = _open_transaction(client)
        if open_transaction is None or open_transaction.calls_in_flight == 0:
            guarded("ending an open transaction", _close_open, client)
        return None

    # -- helpers ------------------------------------------------------------------

    def _with_payload(
        self,
        transaction: Transaction,
        message_arg: Arg,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        message: Any,
        summary: headers.HeaderSummary | None = None,
    ) -> Call:
        prepared = guarded(
            "inserting the trace context", transaction.prepare_payload, message, summary
        )
        if prepared is not None and prepared is not message:
            args, kwargs = message_arg.replace(args, kwargs, prepared)
        return Call(args, kwargs)

    def _owning_call(
        self, transaction: Transaction, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Call:
        return Call(
            args,
            kwargs,
            transaction=transaction,
            on_success=transaction.end,
            on_error=lambda exc: transaction.end(exception=exc),
            context=transaction.context,
        )

    def _begin_hand_driven(
        self, client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Call | None:
        _close_open(client)
        transaction = self._begin(client, "mail", None)
        if transaction is None:
            return None
        sender_arg, options_arg = self._mail
        sender = sender_arg.get(args, kwargs)
        guarded("recording the envelope", transaction.set_envelope, sender, None)
        transaction.run_request_hook(sender, None, None)
        try:
            setattr(client, _OPEN_ATTRIBUTE, transaction)
            _OPEN_CLIENTS.add(client)
        except (AttributeError, TypeError):
            report("keeping the transaction on the client")
            transaction.abort("smtp.client_not_traceable")
            return None
        options = options_arg.get(args, kwargs)
        grown = guarded("adjusting SIZE=", _grow_size_option, options, transaction)
        if grown is not None:
            args, kwargs = options_arg.replace(args, kwargs, grown)

        def succeeded(result: Any) -> None:
            reply = self.dialect.reply_from_result(result)
            transaction.on_mail_reply(reply)
            if reply is not None and not reply.is_positive_completion:
                _forget_open(client, transaction)
                transaction.end(result)

        def failed(exception: BaseException) -> None:
            _forget_open(client, transaction)
            transaction.end(exception=exception)

        return Call(args, kwargs, transaction=transaction, on_success=succeeded, on_error=failed)


def _forget_open(client: Any, transaction: Transaction) -> None:
    if getattr(client, _OPEN_ATTRIBUTE, None) is transaction:
        setattr(client, _OPEN_ATTRIBUTE, None)


def _grow_size_option(options: Any, transaction: Transaction) -> list[Any] | None:
    """Add the length of the lines to be inserted to a ``SIZE=`` option given to MAIL.

    In a hand-driven transaction the message is known only at DATA, after MAIL has
    declared its size, so the declared size grows by the expected length of the lines.
    """
    # Only lists and tuples are read: iterating a generator here would use it up before
    # the library sends MAIL.
    if not options or not isinstance(options, (list, tuple)):
        return None
    grown: list[Any] = list(options)
    for index, option in enumerate(grown):
        if isinstance(option, str) and option.lower().startswith("size="):
            size = option[5:]
            if size.isdigit():
                extra = transaction.expected_insert_length()
                if extra:
                    grown[index] = f"{option[:5]}{int(size) + extra}"
                    return grown
    return None


def _declared_size(options: Any) -> int | None:
    if not options or not isinstance(options, (list, tuple)):
        return None
    for option in options:
        if isinstance(option, str) and option[:5].lower() == "size=" and option[5:].isdigit():
            return int(option[5:])
    return None


def _traceparent_of_message(message: Any) -> str | None:
    get_all = getattr(message, "get_all", None)
    if get_all is None:
        return None
    values = get_all("traceparent") or []
    return str(values[0]).strip() if values else None


def end_open_transactions() -> None:
    """End the spans of hand-driven transactions still open when instrumentation is removed.

    The rest of such a transaction runs uninstrumented: DATA goes out without inserted
    lines, although a ``SIZE=`` given to MAIL was already grown. The span ends without
    an error status and with an ``smtp.uninstrumented`` event.
    """
    for client in list(_OPEN_CLIENTS):
        transaction = _open_transaction(client)
        if transaction is not None:
            guarded("ending an open transaction", transaction.end_uninstrumented)
        guarded("forgetting an open transaction", setattr, client, _OPEN_ATTRIBUTE, None)
    _OPEN_CLIENTS.clear()
