"""Postfix 3.7.11 log lines, as its maillog_file wrote them in a private test instance.

The instance relayed to a local sink that accepted ok@, replied 451 to defer@ and 550
to reject@. Later lines come from a queue flush, from expiring the deferred message
(maximal_queue_lifetime = 1s), and from a delivery while the sink was down.
"""

from __future__ import annotations

DEFERRED = (
    "Dec 04 20:03:52 mta postfix/smtp[3790]: 34DE520C0CD: to=<defer@dest.example>, "
    "relay=127.0.0.1[127.0.0.1]:2600, delay=0.03, delays=0.01/0.01/0/0.01, dsn=4.3.0, "
    "status=deferred (host 127.0.0.1[127.0.0.1] said: 451 4.3.0 <defer@dest.example> "
    "try again later (in reply to RCPT TO command))"
)
BOUNCED = (
    "Dec 04 20:03:52 mta postfix/smtp[3790]: 34DE520C0CD: to=<reject@dest.example>, "
    "relay=127.0.0.1[127.0.0.1]:2600, delay=0.04, delays=0.01/0.01/0/0.02, dsn=5.1.1, "
    "status=bounced (host 127.0.0.1[127.0.0.1] said: 550 5.1.1 <reject@dest.example>: "
    "Recipient address rejected: User unknown (in reply to RCPT TO command))"
)
SENT = (
    "Dec 04 20:03:52 mta postfix/smtp[3790]: 34DE520C0CD: to=<ok@dest.example>, "
    "relay=127.0.0.1[127.0.0.1]:2600, delay=0.04, delays=0.01/0.01/0/0.02, dsn=2.0.0, "
    "status=sent (250 2.0.0 Ok: queued as SINK123)"
)
NOTIFICATION_CLEANUP = (
    "Dec 04 20:03:52 mta postfix/cleanup[3789]: 3D43E20C0D4: "
    "message-id=<20261204200352.3D43E20C0D4@mta.example.test>"
)
NOTIFICATION_QMGR = (
    "Dec 04 20:03:52 mta postfix/qmgr[3783]: 3D43E20C0D4: from=<>, size=2372, nrcpt=1 "
    "(queue active)"
)
NOTIFICATION = (
    "Dec 04 20:03:52 mta postfix/bounce[3793]: 34DE520C0CD: sender non-delivery "
    "notification: 3D43E20C0D4"
)
NOTIFICATION_SENT = (
    "Dec 04 20:03:52 mta postfix/smtp[3790]: 3D43E20C0D4: to=<sender@app.example>, "
    "relay=127.0.0.1[127.0.0.1]:2600, delay=0, delays=0/0/0/0, dsn=2.0.0, "
    "status=sent (250 2.0.0 Ok: queued as SINK123)"
)
NOTIFICATION_REMOVED = "Dec 04 20:03:52 mta postfix/qmgr[3783]: 3D43E20C0D4: removed"
DEFERRED_RETRY = (
    "Dec 04 20:04:05 mta postfix/smtp[3834]: 34DE520C0CD: to=<defer@dest.example>, "
    "relay=127.0.0.1[127.0.0.1]:2600, delay=13, delays=13/0.02/0/0.01, dsn=4.3.0, "
    "status=deferred (host 127.0.0.1[127.0.0.1] said: 451 4.3.0 <defer@dest.example> "
    "try again later (in reply to RCPT TO command))"
)
EXPIRED = (
    "Dec 04 20:04:05 mta postfix/qmgr[3829]: 34DE520C0CD: from=<sender@app.example>, "
    "status=expired, returned to sender"
)
EXPIRY_NOTIFICATION = (
    "Dec 04 20:04:05 mta postfix/bounce[3835]: 34DE520C0CD: sender non-delivery "
    "notification: 5CA5320C006"
)
REMOVED = "Dec 04 20:04:05 mta postfix/qmgr[3829]: 34DE520C0CD: removed"
CONNECTION_REFUSED = (
    "Dec 04 20:04:13 mta postfix/smtp[3886]: 830E720C02D: to=<ok@dest.example>, "
    "relay=none, delay=0.02, delays=0.01/0.01/0/0, dsn=4.4.1, "
    "status=deferred (connect to 127.0.0.1[127.0.0.1]:2600: Connection refused)"
)
CONNECT_FAILURE_NOTICE = (
    "Dec 04 20:04:13 mta postfix/smtp[3886]: connect to 127.0.0.1[127.0.0.1]:2600: "
    "Connection refused"
)
SMTPD_CLIENT = "Dec 04 20:03:52 mta postfix/smtpd[3787]: 34DE520C0CD: client=unknown[127.0.0.1]"
SMTPD_CONNECT = "Dec 04 20:03:52 mta postfix/smtpd[3787]: connect from unknown[127.0.0.1]"
MASTER_STARTED = (
    "Dec 04 20:03:51 mta postfix/master[3781]: daemon started -- version 3.7.11, "
    "configuration /tmp/pfprobe/pf"
)

# The message part of SENT, for prefix variants.
SENT_MESSAGE = SENT.split(": ", 1)[1]
