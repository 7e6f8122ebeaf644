"""Where every domain's warnings leave the city brain: CAP 1.2 on Kafka, and notices to people,
plates and venues."""

from __future__ import annotations

from schemas.cap import Alert, published, to_xml
from schemas.records import Notice
from streams import metrics, topics
from streams.effects import Effects


def send_alert(alert: Alert, effects: Effects) -> None:
    """An incident's step goes out as CAP JSON on `alerts` and as CAP XML on `alerts.cap`, keyed
    by incident (its end as two messages: `published`)."""
    effects.alert_set_off(alert.info[0].category)
    for message in published(alert):
        metrics.ALERTS.labels(message.info[0].category, message.info[0].severity, message.msg_type).inc()
        effects.send(topics.alerts, message.incidents, message)
        effects.send_raw(topics.alerts_cap, message.incidents, to_xml(message).encode())


def send_notice(notice: Notice, effects: Effects) -> None:
    """A notice goes to its addressee's key on `notices`."""
    metrics.NOTICES.labels(notice.kind).inc()
    effects.send(topics.notices, notice.to, notice)
