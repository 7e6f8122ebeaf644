"""Public alerts an operator approves before they leave (the settings' `approval_severities`).

  alerts.reviews (by incident: its steps, and the operators' decisions on its drafts, in one order)
      -> approval -> per incident: what went out, what waits, what an operator said
      -> alerts + alerts.cap: the steps that go out
  GET  /alerts/drafts                          the drafts waiting, as CAP messages of status Draft
  POST /alerts/drafts/{identifier}/approve     it goes out
  POST /alerts/drafts/{identifier}/reject      it does not    (body, optional: {"note": "why"})

Any worker answers, with a bearer token of `webhook_api_tokens` as for the subscriptions. A step
the rules hold (`waits`) stays a draft until an operator's word; every other step goes straight
out, in its incident's order. An operator decides on an incident as it stands: its newer step
replaces a draft still waiting (a word on the replaced one is of no effect), an approval covers
the incident's later steps up to the severity approved, and a rejection keeps back those that
would wait, up to the severity rejected. The end of an incident goes out wherever people heard
of it; a draft nobody saw is withdrawn with it.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace
from typing import Literal, NamedTuple

import orjson
from faust.web import Request, Response

from agents.alerts import publish_alert
from agents.webhook_api import OperatorView
from schemas.cap import SEVERITY_RANK, Alert, Severity, cap_time, reference_to, step_of
from schemas.contract import encode, from_dict, iso, parse_time, to_dict
from schemas.records import Decision, ReviewEntry
from streams import metrics, runtime, topics
from streams.app import app
from streams.clock import is_live
from streams.effects import Effects, Source
from streams.settings import Approval
from streams.stage import Stage
from streams.table import Table, Value

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Rules (pure)


@dataclass(frozen=True, slots=True)
class Review:
    """Where an incident's way out stands, from its first step until a while after its end."""

    public: str | None = None  # the reference of its last message that went out; None: none has
    approved: Severity | None = None  # an operator approved it up to this severity
    rejected: Severity | None = None  # an operator rejected it at this severity
    draft: Alert | None = None  # its newest step, waiting for an operator's word
    step: int = -1  # its newest step taken: a step sent again (a stage's batch after a crash) is taken once
    last_at: float = 0.0  # when that step reached Kafka (a draft's: when it was drafted)


class Step(NamedTuple):
    review: Review
    out: Alert | None = None  # the message that goes out now
    draft_ended: str | None = None  # how a draft that waited ended: approved, rejected, replaced, withdrawn
    kept_back: bool = False  # a step of the kind an operator rejected
    repeated: bool = False  # a step taken before


def waits(alert: Alert, review: Review, rules: Approval) -> bool:
    """Whether a step waits for an operator: public, of a severity and urgency the rules hold, and
    above what an operator already approved of its incident."""
    info = alert.info[0]
    return (alert.scope == "Public" and info.severity in rules.severities and info.urgency in rules.urgencies
            and SEVERITY_RANK[info.severity] > SEVERITY_RANK[review.approved])


def chained(review: Review, alert: Alert) -> Alert:
    """A step as it goes out, chained to what went out before it (a step it replaced never did):
    the incident's first message out is its Alert."""
    return replace(alert, msg_type="Alert" if review.public is None else alert.msg_type, references=review.public)


def going_out(review: Review, alert: Alert) -> Step:
    out = chained(review, alert)
    return Step(replace(review, public=reference_to(out), draft=None), out)


def sent_at(alert: Alert, at: float) -> Alert:
    """A draft approved after it was made, as sent at its approval: readers that poll by time
    find it, and it stands as long as it would have."""
    shift = at - parse_time(alert.sent)
    if shift <= 0:
        return alert
    return replace(alert, sent=cap_time(at), info=[
        replace(i, expires=cap_time(parse_time(i.expires) + shift) if i.expires else None) for i in alert.info])


def proposed(review: Review, alert: Alert, rules: Approval, at: float) -> Step:
    """An incident's next step: out, kept back, or a draft in place of any draft still waiting. A
    step that would wait, of a severity an operator rejected, is kept back; a step that needs no
    approval goes out whatever was rejected."""
    step = step_of(alert.identifier)
    if step <= review.step:
        return Step(review, repeated=True)
    replaced = "replaced" if review.draft else None
    review = replace(review, draft=None, step=step, last_at=at)
    if alert.msg_type == "Cancel":  # the end goes out where people heard of the incident
        out = going_out(review, alert).out if review.public else None
        return Step(review, out, "withdrawn" if replaced else None)  # kept until forgotten: repeats are known
    if not waits(alert, review, rules):
        return going_out(review, alert)._replace(draft_ended=replaced)
    if SEVERITY_RANK[alert.info[0].severity] <= SEVERITY_RANK[review.rejected]:
        return Step(review, None, replaced, kept_back=True)
    return Step(replace(review, draft=alert), None, replaced)


def decided(review: Review, decision: Decision) -> Step:
    """An operator's word on the incident's draft; on a draft since replaced, of no effect."""
    draft = review.draft
    if draft is None or draft.identifier != decision.identifier:
        return Step(review)
    severity = draft.info[0].severity
    if decision.verdict == "rejected":
        return Step(replace(review, rejected=severity, draft=None), None, "rejected")
    return going_out(replace(review, approved=severity), sent_at(draft, decision.at))._replace(draft_ended="approved")


def as_draft(alert: Alert) -> Alert:
    """A waiting step as operators see it: a CAP message of status Draft."""
    return replace(alert, status="Draft")


# ---------------------------------------------------------------------------------------------
# Stage


class ApprovalStage(Stage):
    """Per partition of the reviews: each incident's way out, until a while after its end."""

    name = "approval"
    source = "alert_reviews"
    contract = ReviewEntry
    incidents = Table(Review)
    clock = Value(float, -math.inf)  # the newest entry's broker time: the partition's time

    def on_event(self, entry: ReviewEntry, source: Source, effects: Effects) -> None:
        at = source.timestamp or 0.0
        self.clock = max(self.clock, at)
        if entry.alert is not None:
            alert, incident = entry.alert, entry.alert.incidents
            # An incident first met mid-way (approval set on while it ran) went out up to here.
            step = proposed(self.incidents.get(incident) or Review(alert.references), alert, self.settings.approval, at)
            if step.review.draft is alert:
                metrics.ALERT_DRAFTS.labels("drafted").inc()
        elif entry.decision is not None and entry.decision.incident in self.incidents:
            decision, incident = entry.decision, entry.decision.incident
            step = decided(self.incidents[incident], decision)
            log.warning("alert %s %s by an operator%s", decision.identifier,
                        step.draft_ended or f"{decision.verdict}, of no effect: decided before, or replaced",
                        f": {decision.note}" if decision.note else "")
        else:
            return  # a word on an incident long ended: of no effect
        if step.repeated:
            effects.repeated()
            return
        self.incidents[incident] = step.review
        if step.draft_ended:
            metrics.ALERT_DRAFTS.labels(step.draft_ended).inc()
        if step.kept_back:
            metrics.ALERTS_KEPT_BACK.inc()
        if step.out is not None:
            publish_alert(step.out, effects)

    def forget(self, now: float) -> None:
        """Incidents whose last step is older than a message stands (`cap_expires_s`): ended ones,
        kept so far so that their steps sent again are known, and drafts nobody decided on."""
        for incident, review in [(i, r) for i, r in self.incidents.items() if r.last_at + self.settings.cap.expires_s <= now]:
            if review.draft is not None:
                metrics.ALERT_DRAFTS.labels("expired").inc()
                log.warning("alert %s expired waiting for an operator's word", review.draft.identifier)
            del self.incidents[incident]

    def flush(self, effects: Effects) -> None:
        self.forget(self.clock)

    def on_idle(self, wall_now: float, effects: Effects) -> None:
        if is_live(self.clock, wall_now, 2 * self.settings.cap.expires_s):
            self.forget(wall_now)

    def gauges(self) -> metrics.Gauges:
        waiting = [r.last_at for r in self.incidents.values() if r.draft is not None]
        return metrics.merge(metrics.gauge("citybrain_alert_drafts_waiting", len(waiting)),
                             metrics.gauge("citybrain_alert_draft_wait_seconds",
                                           max(0.0, time.time() - min(waiting)) if waiting else 0.0))


runtime.stage(ApprovalStage)


async def drafts() -> list[tuple[Alert, float]]:
    """Every waiting draft as it would go out (in its place in its incident's chain) with when it
    was drafted, oldest first, read from Redis: any worker answers for the whole city."""
    rows = await runtime.read_table(ApprovalStage, "incidents")
    return sorted(((chained(r, r.draft), r.last_at) for r in rows.values() if r.draft is not None),
                  key=lambda d: (d[1], d[0].identifier))


# ---------------------------------------------------------------------------------------------
# Pages


@app.page("/alerts/drafts")
class DraftsView(OperatorView):
    async def get(self, request: Request) -> Response:
        return self.json([{**to_dict(as_draft(draft)), "drafted_at": at} for draft, at in await drafts()])


class DecisionView(OperatorView):
    verdict: Literal["approved", "rejected"]

    async def post(self, request: Request, identifier: str) -> Response:
        draft = next((d for d, _ in await drafts() if d.identifier == identifier), None)
        if draft is None:
            return self.error(404, f"no draft {identifier}: decided already, replaced by a newer step, or never held")
        try:
            body = orjson.loads(await request.read() or b"{}")
            if not isinstance(body, dict):
                raise ValueError("the body is a JSON object")
            decision = from_dict(Decision, {"incident": draft.incidents, "identifier": identifier, "verdict": self.verdict,
                                            "at": iso(time.time()), "note": body.get("note") or None})
        except ValueError as exc:  # not JSON, or not a decision (a Rejected says why)
            return self.error(400, f"{getattr(exc, 'reason', exc)}: the body is {{\"note\": \"why\"}}, or none")
        await (await topics.alert_reviews.send(key=draft.incidents.encode(), value=encode(ReviewEntry(decision=decision))))
        return self.json({self.verdict: identifier}, status=202)


@app.page("/alerts/drafts/{identifier}/approve")
class ApproveView(DecisionView):
    verdict = "approved"


@app.page("/alerts/drafts/{identifier}/reject")
class RejectView(DecisionView):
    verdict = "rejected"
