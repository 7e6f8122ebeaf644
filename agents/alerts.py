"""Where every domain's warnings leave the city brain: CAP 1.2 on Kafka, and notices to people,
plates and venues."""

from __future__ import annotations

from schemas.cap import Alert, to_xml
from schemas.records import Notice
from streams import metrics, topics
from streams.effects import Effects


def send_alert(alert: Alert, effects: Effects) -> None:
    """An alert goes out as CAP JSON on `alerts` and as CAP XML on `alerts.cap`, keyed by incident."""
    metrics.ALERTS.labels(alert.info[0].category, alert.info[0].severity, alert.msg_type).inc()
    effects.alert_set_off(alert.info[0].category)
    effects.send(topics.alerts, alert.incidents, alert)
    effects.send_raw(topics.alerts_cap, alert.incidents, to_xml(alert).encode())


def send_notice(notice: Notice, effects: Effects) -> None:
    """A notice goes to its addressee's key on `notices`."""
    metrics.NOTICES.labels(notice.kind).inc()
    effects.send(topics.notices, notice.to, notice)
