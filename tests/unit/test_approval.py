"""Public alerts an operator approves first: which steps wait, what an approval and a rejection
do to an incident's later steps, and how the messages that go out still chain as CAP asks."""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest

from agents.alerts import send_alert
from agents.approval import ApprovalStage, Review, waits
from schemas.cap import Alert, Incident, bilingual, cap_time, circle_area, reference_to
from schemas.contract import from_dict, parse_time
from schemas.records import Decision, ReviewEntry
from schemas.reference import CityMap
from streams.effects import Effects
from streams.settings import Settings
from streams.state import Batch
from streams.tools.harness import place, run_stage

S = Settings.of(approval_severities=("Severe", "Extreme"), webhook_api_tokens=("an-operators-token",))
T0 = 1_784_534_400.0  # 2026-07-20T08:00:00Z


class Steps:
    """An incident's steps as a stage makes them, each a ReviewEntry on its way out."""

    def __init__(self, incident: str):
        self.incident = Incident(incident)
        self.at = T0

    def next(self, msg_type: str, severity: str = "Severe", urgency: str = "Immediate", operational: bool = False
             ) -> Alert:
        info = bilingual({"en-US": ("Water on Wensan Rd", "35 cm of water.", "Avoid it.")}, "Met", "Road waterlogging",
                         "Avoid", urgency, severity, "Observed", [("zone_id", "Z1")],
                         [circle_area("Wensan Rd underpass", 30.27, 120.13, 0.3)])
        self.incident, alert = self.incident.message(S.cap, msg_type, self.at, info, operational=operational)
        self.at += 60
        return alert


def entry(alert: Alert) -> tuple[str, str, ReviewEntry]:
    return "alert_reviews", alert.incidents, ReviewEntry(alert=alert)


def word(alert: Alert, verdict: str) -> tuple[str, str, ReviewEntry]:
    return "alert_reviews", alert.incidents, ReviewEntry(decision=Decision(alert.incidents, alert.identifier, verdict, T0))


def out(events, batch=10_000) -> list[Alert]:
    return [from_dict(Alert, a) for _, a in run_stage(ApprovalStage, events, city=CityMap(), settings=S, batch=batch)
            .sent("alerts")]


def test_which_steps_wait_public_ones_of_held_severity_and_urgency_above_what_was_approved():
    steps = Steps("waterlogging.P1.1")
    assert waits(steps.next("Alert"), Review(), S.approval)
    assert waits(steps.next("Alert", "Extreme"), Review(approved="Severe"), S.approval)
    assert not waits(steps.next("Alert"), Review(approved="Severe"), S.approval)
    assert not waits(steps.next("Alert", "Moderate"), Review(), S.approval)
    assert not waits(steps.next("Alert", operational=True), Review(), S.approval)  # for the operations room
    assert not waits(steps.next("Alert", urgency="Expected"), Review(), S.approval)  # a forecast's lead time


def test_an_approved_alert_goes_out_and_covers_its_incidents_later_steps_up_to_its_severity():
    steps = Steps("waterlogging.P1.1")
    alert, update = steps.next("Alert"), steps.next("Update")
    escalated, cancel = steps.next("Update", "Extreme"), steps.next("Cancel", "Minor", "Past")
    assert out([entry(alert)]) == []  # waits as a draft
    sent = out([entry(alert), word(alert, "approved"), entry(update), entry(escalated), entry(cancel)])
    # The approved Alert, the Update within what was approved; the escalation waited and was
    # withdrawn by the end, which goes out (as an all clear and its Cancel) after the Update.
    assert [(a.identifier, a.msg_type, a.status) for a in sent] == [
        (alert.identifier, "Alert", "Actual"), (update.identifier, "Update", "Actual"),
        (cancel.identifier, "Update", "Actual"), (f"{cancel.identifier}.cancel", "Cancel", "Actual")]
    assert [a.references for a in sent] == [None, *(reference_to(a) for a in sent[:-1])]


def test_a_rejected_alert_never_goes_out_nor_do_its_incidents_later_steps_that_would_wait_up_to_its_severity():
    steps = Steps("waterlogging.P1.1")
    alert, update, worse, cancel = steps.next("Alert"), steps.next("Update"), steps.next("Update", "Extreme"), \
        steps.next("Cancel", "Minor", "Past")
    output = run_stage(ApprovalStage, [entry(alert), word(alert, "rejected"), entry(update), entry(worse)],
                       city=CityMap(), settings=S)
    assert output.sent("alerts") == []
    # The escalation above what was rejected asks again; the end of an incident nobody heard of is silent.
    assert [d.identifier for d in draft_of(output)] == [worse.identifier]
    output = run_stage(ApprovalStage, [entry(alert), word(alert, "rejected"), entry(update), entry(worse), entry(cancel)],
                       city=CityMap(), settings=S)
    assert output.sent("alerts") == [] and not draft_of(output)


def test_a_newer_step_replaces_a_waiting_draft_and_a_word_on_the_replaced_one_does_nothing():
    steps = Steps("waterlogging.P1.1")
    alert, update = steps.next("Alert"), steps.next("Update")
    assert out([entry(alert), entry(update), word(alert, "approved")]) == []
    (sent,) = out([entry(alert), entry(update), word(alert, "approved"), word(update, "approved")])
    # The first message out is the incident's Alert, whatever step it was made at.
    assert (sent.identifier, sent.msg_type, sent.references) == (update.identifier, "Alert", None)


def test_an_incident_out_before_it_escalates_keeps_its_chain_and_its_end_after_a_rejection():
    steps = Steps("waterlogging.P1.1")
    watch, warning, again = steps.next("Alert", "Moderate"), steps.next("Update", "Severe"), steps.next("Update", "Severe")
    calmer, cancel = steps.next("Update", "Moderate"), steps.next("Cancel", "Minor", "Past")
    sent = out([entry(watch), entry(warning), word(warning, "rejected"), entry(again), entry(calmer), entry(cancel)])
    # The rejected severity is kept back; what needs no approval still goes out, chained to what
    # people heard, and the incident ends for them.
    assert [a.identifier for a in sent] == [watch.identifier, calmer.identifier, cancel.identifier,
                                            f"{cancel.identifier}.cancel"]
    assert sent[1].references == reference_to(watch) and sent[2].references == reference_to(sent[1])


def test_a_step_sent_again_is_taken_once_and_an_incident_is_forgotten_once_its_last_step_has_expired():
    steps = Steps("waterlogging.P1.1")
    watch, warning = steps.next("Alert", "Moderate"), steps.next("Update", "Severe")
    cancel = steps.next("Cancel", "Minor", "Past")
    # A stage that crashed before its commit sends its batch again: once out is once out.
    again = [entry(watch), entry(warning), word(warning, "approved"), entry(watch), entry(warning), entry(cancel),
             entry(cancel), entry(watch)]
    assert [a.identifier for a in out(again)] == [watch.identifier, warning.identifier, cancel.identifier,
                                                  f"{cancel.identifier}.cancel"]
    one = replace(S, partitions=1)  # one partition, one clock
    ended = run_stage(ApprovalStage, place(again, one, T0), city=CityMap(), settings=one)
    assert incidents_in(ended) == [watch.incidents]  # kept a while, so that repeats are known
    draft = Steps("waterlogging.P2.1").next("Alert")
    later = Steps("waterlogging.P3.1").next("Alert", "Moderate")
    events = place([*again, entry(draft)], one, T0) + place([entry(later)], one, T0 + one.cap.expires_s + 1)
    # Six hours on, the ended incident and the draft nobody decided on are gone.
    assert incidents_in(run_stage(ApprovalStage, events, city=CityMap(), settings=one)) == [later.incidents]


def incidents_in(output) -> list[str]:
    return sorted(k for key, rows in output.state.items() if key.endswith(":incidents") for k in rows)


def test_the_same_entries_give_the_same_messages_whatever_the_batches():
    events = []
    for n in range(4):
        steps = Steps(f"waterlogging.P{n}.1")
        alert, update, cancel = steps.next("Alert"), steps.next("Update", "Extreme"), steps.next("Cancel", "Minor", "Past")
        events += [entry(alert), word(alert, "approved" if n % 2 else "rejected"), entry(update),
                   word(update, "approved"), entry(cancel)]
    whole = out(events)
    assert whole and all(out(events, batch) == whole for batch in (1, 2, 3))


def test_with_approval_set_a_stages_alert_goes_on_its_way_to_the_operators_not_out():
    alert = Steps("waterlogging.P1.1").next("Alert", "Moderate")
    for approval, topic in ((True, "alerts.reviews"), (False, "alerts")):
        effects = Effects("waterlogging", Batch("cb:{x.0}", 0, {}), approval=approval)
        send_alert(alert, effects)
        assert effects.sends[0][0].get_topic_name() == topic


def draft_of(output) -> list[Alert]:
    return [from_dict(Alert, r["draft"]) for k, v in output.state.items() if k.endswith(":incidents")
            for r in map(orjson.loads, v.values()) if r.get("draft")]


def test_an_alert_approved_later_is_sent_at_its_approval_and_stands_as_long_as_it_would_have():
    steps = Steps("waterlogging.P1.1")
    alert = steps.next("Alert")
    later = T0 + 1800
    decision = ("alert_reviews", alert.incidents,
                ReviewEntry(decision=Decision(alert.incidents, alert.identifier, "approved", later)))
    (sent,) = out([entry(alert), decision])
    assert (sent.identifier, sent.sent) == (alert.identifier, cap_time(later))
    assert parse_time(sent.info[0].expires) == parse_time(alert.info[0].expires) + 1800


def test_approval_without_a_token_to_approve_with_is_refused_at_start():
    with pytest.raises(ValueError, match="CITYBRAIN_WEBHOOK_API_TOKENS"):
        Settings.of(approval_severities=("Severe",))
