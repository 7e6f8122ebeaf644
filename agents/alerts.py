"""Where every domain's warnings leave the city brain: CAP 1.2 on Kafka, and notices to people,
plates and venues; and how long a condition must hold before a warning changes."""

from __future__ import annotations

from schemas.cap import Alert, published, to_xml
from schemas.records import Notice, ReviewEntry
from streams import metrics, topics
from streams.effects import Effects


def held_since(since: float | None, holds: bool, window_start: float) -> float | None:
    """When an unbroken spell of a condition began: the start of the first window it held in, kept
    while it holds (a window a feed did not report breaks nothing), None once it fails. A rule
    that waits for a spell counts its minutes of event time, never its windows or readings, so a
    feed reporting every 5 minutes is warned of as soon as one reporting every minute."""
    if not holds:
        return None
    return window_start if since is None else since


def send_alert(alert: Alert, effects: Effects) -> None:
    """An incident's step goes out, or, where operators approve public alerts first, goes on its
    way to them (agents/approval.py), keyed by incident so that its steps keep their order."""
    effects.alert_set_off(alert.info[0].category)
    if effects.approval:
        effects.send(topics.alert_reviews, alert.incidents, ReviewEntry(alert=alert))
    else:
        publish_alert(alert, effects)


def publish_alert(alert: Alert, effects: Effects) -> None:
    """An incident's step goes out as CAP JSON on `alerts` and as CAP XML on `alerts.cap`, keyed
    by incident (its end as two messages: `published`)."""
    for message in published(alert):
        metrics.ALERTS.labels(message.info[0].category, message.info[0].severity, message.msg_type).inc()
        effects.send(topics.alerts, message.incidents, message)
        effects.send_raw(topics.alerts_cap, message.incidents, to_xml(message).encode())


def send_notice(notice: Notice, effects: Effects) -> None:
    """A notice goes to its addressee's key on `notices`."""
    metrics.NOTICES.labels(notice.kind).inc()
    effects.send(topics.notices, notice.to, notice)
