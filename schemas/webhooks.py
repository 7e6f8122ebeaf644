"""Webhook contracts: the subscriptions operators configure, the records of their deliveries,
and what a receiver gets (the body of an attempt and its signature, per Standard Webhooks)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import field
from typing import Literal

import orjson

from schemas.cap import Alert, Severity, to_xml
from schemas.contract import EventTime, contract, iso, text, to_dict
from schemas.records import Notice
from schemas.reference import LatLon

Feed = Literal["alerts", "notices"]  # the topics a subscription takes messages from


@contract
class Subscription:
    """An endpoint and what it wants. Empty filters match everything.

    `events` are CAP event names for alerts (`Flood evacuation`) and kinds for notices
    (`evacuate`); `categories`, `min_severity` and `msg_types` apply to alerts; `zones` to both.
    """

    subscription_id: str
    url: str
    secrets: list[str]  # `whsec_<base64>`; several while one is being rotated
    sources: list[Feed] = field(default_factory=lambda: ["alerts"])
    categories: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    zones: list[str] = field(default_factory=list)
    min_severity: Severity | None = None
    msg_types: list[str] = field(default_factory=list)
    # Where: alerts whose areas reach this polygon (a ring of lat, lon), or come within `near`
    # (lat, lon, metres); a subscription with either takes no notices.
    area: list[LatLon] = field(default_factory=list)
    near: tuple[float, float, float] | None = None
    include_cap_xml: bool = False  # the alert's CAP 1.2 XML in `data.cap_xml` too
    allow_private: bool = False  # deliver to private or loopback addresses (off: refused)


# A delivery's body carries the whole message, its CAP XML included: far more than a text field's
# usual 1,000 characters, and never more than Kafka takes in one record.
BODY_CHARACTERS = 1_048_576


@contract
class Delivery:
    """A message on its way to one endpoint, kept until it is delivered, gone or given up."""

    delivery_id: str  # the `webhook-id`: the same on every attempt
    subscription_id: str
    order_key: str  # messages with one order key reach the endpoint in order (an incident's, an addressee's)
    seq: int  # order within the key: the message's offset
    body: str = text(BODY_CHARACTERS)
    queued_at: EventTime  # when the message reached Kafka
    attempt: int = 0  # attempts made so far
    next_at: EventTime = 0.0
    last_error: str | None = None


Outcome = Literal["delivered", "retry", "gone", "exhausted", "enabled"]  # enabled: by an operator, after a 410


@contract
class DeliveryOutcome:
    """What one attempt came to, sent back to the partition that holds the delivery."""

    delivery_id: str
    subscription_id: str
    attempt: int  # the attempt this outcome is of (1 for the first)
    outcome: Outcome
    at: EventTime
    status: int | None = None  # the endpoint's HTTP status, if it answered
    error: str | None = None
    next_at: EventTime | None = None  # for a retry


@contract
class DeadDelivery:
    """A delivery given up on: attempts exhausted, the endpoint gone, or its address refused."""

    delivery_id: str
    subscription_id: str
    attempts: int
    reason: str
    last_status: int | None
    body: str = text(BODY_CHARACTERS)
    at: EventTime


def payload(record: Alert | Notice, queued_at: float, sub: Subscription) -> str:
    """The body of every attempt: the event type, when it happened, and the message itself."""
    if isinstance(record, Notice):
        kind, data = f"notice.{record.kind}", to_dict(record)
    else:
        kind, data = f"alert.{record.msg_type.lower()}", to_dict(record)
        if sub.include_cap_xml:
            data["cap_xml"] = to_xml(record)
    return orjson.dumps({"type": kind, "timestamp": iso(queued_at), "data": data}).decode()


def secret_bytes(secret: str) -> bytes:
    try:
        return base64.b64decode(secret.removeprefix("whsec_") + "==")
    except ValueError:
        return b""


def signature(secrets: list[str], delivery_id: str, timestamp: int, body: str) -> str:
    """`webhook-signature`: one `v1,<base64 HMAC-SHA256 of id.timestamp.body>` per secret."""
    signed = f"{delivery_id}.{timestamp}.{body}".encode()
    return " ".join(
        "v1," + base64.b64encode(hmac.new(secret_bytes(s), signed, hashlib.sha256).digest()).decode() for s in secrets
    )
