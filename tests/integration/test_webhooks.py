"""Webhook delivery on the real stack to a real HTTP receiver on loopback, every delivery checked
with the reference `standardwebhooks` verifier."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import Callable

import orjson
import pytest
from aiohttp import web
from standardwebhooks import Webhook

from schemas.cap import Area, Incident, bilingual
from schemas.contract import parse_time
from schemas.records import Notice
from streams.settings import Cap
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration

SECRET = "whsec_" + base64.b64encode(b"a receiver's secret, 32 bytes...").decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"the secret being rotated out....").decode()
T0 = parse_time("2026-07-20T08:00:00Z")


class Receiver:
    """An HTTP endpoint on loopback that records every request and answers as told per path."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[tuple[str, dict[str, str], bytes, float]] = []
        self.rules: dict[str, Callable[[int], tuple[int, dict[str, str]]]] = {}
        self.hold = threading.Event()  # requests to /slow wait for this
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(started,), daemon=True)
        self.thread.start()
        started.wait(10)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _serve(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_post("/{name}", self._handle)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", self.port).start())
        started.set()
        self.loop.run_forever()
        self.loop.close()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        seen = sum(1 for p, *_ in self.requests if p == request.path)
        self.requests.append((request.path, dict(request.headers), body, time.time()))
        if request.path == "/slow":
            await asyncio.get_running_loop().run_in_executor(None, self.hold.wait)
        status, headers = self.rules.get(request.path, lambda n: (200, {}))(seen)
        return web.Response(status=status, headers=headers)

    def at(self, path: str) -> list[tuple[dict[str, str], bytes, float]]:
        return [(h, b, t) for p, h, b, t in list(self.requests) if p == path]

    def verified(self, path: str, secret: str = SECRET) -> list[dict]:
        """Every request to a path, verified as the receiver's own code would; payloads in order."""
        return [Webhook(secret).verify(body, headers) for headers, body, _ in self.at(path)]

    def close(self) -> None:
        self.hold.set()
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def eventually(check: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


def subscribe(run_factory, tmp_path, subs: list[dict], **overrides):
    """A city run whose workers deliver to these subscriptions (loopback allowed explicitly)."""
    path = tmp_path / "webhooks.json"
    path.write_bytes(orjson.dumps([{"allow_private": True, "secrets": [SECRET], **s} for s in subs]))
    defaults = {"webhooks_file": str(path), "webhook_backoff_s": 0.2, "webhook_timeout_s": 2.0}
    return run_factory(**{**defaults, **overrides})


def lifecycle(incident: str, zone: str, severity: str = "Severe", category: str = "Met", steps=("Alert", "Update", "Cancel")):
    """An incident's messages, chained as the stages chain them."""
    out, inc = [], Incident(incident)
    for i, msg_type in enumerate(steps):
        info = bilingual({"en-US": (f"{incident} {msg_type}", "what happened", "what to do")}, category, "Rainstorm",
                         "Prepare", "Expected", severity, "Observed", [("zone_id", zone)], [Area(zone)])
        inc, alert = inc.message(Cap(), msg_type, T0 + 60 * i, info)
        out.append(("alerts", alert.incidents, alert))
    return out


def notice(token: str, kind: str = "evacuate", zone: str = "Z1") -> tuple[str, str, Notice]:
    return "notices", token, Notice(f"order-1.{token}", token, "person", kind, T0, zone, [("en-US", "go")],
                                    safety_code="red", order_id="order-1")


def ids(payloads: list[dict]) -> list[str]:
    return [p["data"].get("identifier") or p["data"].get("notice_id") for p in payloads]


def test_every_delivery_verifies_matches_its_filters_and_keeps_an_incidents_order(city_run, tmp_path, receiver):
    run = subscribe(city_run, tmp_path, [
        {"subscription_id": "all", "url": receiver.url("/all"), "include_cap_xml": True, "secrets": [SECRET, OLD_SECRET]},
        {"subscription_id": "severe-z2", "url": receiver.url("/z2"), "zones": ["Z2"], "min_severity": "Severe"},
        {"subscription_id": "evacuations", "url": receiver.url("/people"), "sources": ["notices"], "events": ["evacuate"]},
    ])
    run.start_worker()
    messages = (lifecycle("rain.Z1", "Z1") + lifecycle("rain.Z2", "Z2", "Extreme")
                + lifecycle("crowd.Z2", "Z2", "Moderate", "Safety") + [notice("k1.aaa"), notice("k1.bbb", "checked_in")])
    run.publish(messages)
    eventually(lambda: len(receiver.at("/all")) >= 9 and len(receiver.at("/z2")) >= 3 and receiver.at("/people"),
               what="every matching message delivered")
    time.sleep(2)  # nothing else may follow

    everything = receiver.verified("/all") + receiver.verified("/z2") + receiver.verified("/people")
    assert len(everything) == 13
    delivered = receiver.verified("/all")
    assert sorted(ids(delivered)) == sorted(a.identifier for _, _, a in messages[:9])
    for incident in ("rain.Z1", "rain.Z2", "crowd.Z2"):  # each incident's messages in order
        kinds = [p["type"] for p in delivered if p["data"]["incidents"] == incident]
        assert kinds == ["alert.alert", "alert.update", "alert.cancel"]
    assert all(p["data"]["cap_xml"].startswith("<?xml") for p in delivered)
    # Signed with both secrets while one is rotated out: a receiver still on the old one verifies too.
    assert len(receiver.verified("/all", OLD_SECRET)) == 9
    assert [(p["data"]["incidents"], p["type"]) for p in receiver.verified("/z2")] == [
        ("rain.Z2", "alert.alert"), ("rain.Z2", "alert.update"), ("rain.Z2", "alert.cancel")]
    assert [(p["type"], p["data"]["to"]) for p in receiver.verified("/people")] == [("notice.evacuate", "k1.aaa")]
    headers = {h["webhook-id"] for h, _, _ in receiver.at("/all")}
    assert headers == {f"all.{a.identifier}" for _, _, a in messages[:9]}


def test_a_failing_receiver_gets_the_message_later_with_the_same_id_and_in_order(city_run, tmp_path, receiver):
    # The incident's Alert is refused twice (503, then 429 asking for 2 s); its Update must wait.
    refusals = {0: (503, {}), 1: (429, {"Retry-After": "2"})}
    receiver.rules["/flaky"] = lambda n: refusals.get(n, (200, {}))
    run = subscribe(city_run, tmp_path, [{"subscription_id": "flaky", "url": receiver.url("/flaky")}])
    run.start_worker()
    run.publish(lifecycle("rain.Z1", "Z1", steps=("Alert", "Update")))
    eventually(lambda: len(receiver.at("/flaky")) >= 4, what="the Alert after two refusals, then the Update")

    attempts = receiver.at("/flaky")
    verified = receiver.verified("/flaky")
    assert [p["type"] for p in verified] == ["alert.alert"] * 3 + ["alert.update"]
    assert len({h["webhook-id"] for h, _, _ in attempts[:3]}) == 1  # one id on every attempt
    assert attempts[2][2] - attempts[1][2] >= 2.0  # Retry-After honoured
    assert attempts[3][0]["webhook-id"] != attempts[0][0]["webhook-id"]


def test_a_dispatcher_killed_mid_retry_delivers_after_restart(city_run, tmp_path, receiver):
    down = threading.Event()
    down.set()
    receiver.rules["/later"] = lambda n: (503, {}) if down.is_set() else (200, {})
    run = subscribe(city_run, tmp_path, [{"subscription_id": "later", "url": receiver.url("/later")}],
                    webhook_backoff_s=1.0, webhook_max_attempts=50)
    worker = run.start_worker()
    run.publish(lifecycle("rain.Z1", "Z1", steps=("Alert",)))
    eventually(lambda: len(receiver.at("/later")) >= 2, what="retries under way")
    run.kill_worker(worker)
    pending = run.merged("webhooks", "pending")
    assert len(pending) == 1 and next(iter(pending.values()))["attempt"] >= 1  # the retry is kept in Redis

    before_restart = len(receiver.at("/later"))
    down.clear()
    run.start_worker()
    eventually(lambda: len(receiver.at("/later")) > before_restart and not run.merged("webhooks", "pending"),
               what="delivered after the restart")
    assert {h["webhook-id"] for h, _, _ in receiver.at("/later")} == set(pending)  # one id before and after
    assert receiver.verified("/later")[-1]["type"] == "alert.alert"


def test_a_gone_endpoint_is_disabled_and_exhausted_deliveries_become_dead_letters(city_run, tmp_path, receiver):
    receiver.rules["/gone"] = lambda n: (410, {})
    receiver.rules["/broken"] = lambda n: (500, {})
    run = subscribe(city_run, tmp_path, [{"subscription_id": "gone", "url": receiver.url("/gone")},
                                         {"subscription_id": "broken", "url": receiver.url("/broken")}],
                    webhook_max_attempts=3)
    run.start_worker()
    run.publish(lifecycle("rain.Z1", "Z1", steps=("Alert",)))
    eventually(lambda: len(run.records("webhook_dead_letters")) >= 2, what="both given up")
    # Every partition hears that the endpoint is gone.
    eventually(lambda: sum(1 for k in run.state() if k.startswith("{webhooks.") and k.endswith(":disabled")) == 4,
               what="the endpoint disabled on every partition")
    gone_calls = len(receiver.at("/gone"))
    run.publish(lifecycle("rain.Z2", "Z2", steps=("Alert",)))
    eventually(lambda: len(run.records("webhook_dead_letters")) >= 3, what="the broken endpoint's second message")

    dead = {(d["subscription_id"], d["reason"], d["attempts"], d["last_status"]) for d in run.records("webhook_dead_letters")}
    assert ("gone", "endpoint gone (HTTP 410)", 1, 410) in dead
    assert ("broken", "HTTP 500", 3, 500) in dead
    assert len(receiver.at("/gone")) == gone_calls == 1  # nothing more for a gone endpoint
    assert len(receiver.at("/broken")) == 6
    assert all(p["type"] == "alert.alert" for p in receiver.verified("/broken"))
    disabled = [v for k, v in run.state().items() if k.startswith("{webhooks.") and k.endswith(":disabled")]
    assert [set(d) for d in disabled] == [{b"gone"}] * 4


def test_a_dead_endpoint_does_not_slow_a_healthy_one(city_run, tmp_path, receiver):
    run = subscribe(city_run, tmp_path, [{"subscription_id": "slow", "url": receiver.url("/slow")},
                                         {"subscription_id": "healthy", "url": receiver.url("/healthy")}],
                    webhook_timeout_s=120.0)
    run.start_worker()
    messages = [m for i in range(20) for m in lifecycle(f"rain.{i}", "Z1", steps=("Alert",))]
    run.publish(messages)
    # The slow endpoint holds every request it gets; the healthy one must get all twenty meanwhile.
    eventually(lambda: len(receiver.at("/healthy")) == 20, what="the healthy endpoint's deliveries")
    assert receiver.at("/slow") and not receiver.hold.is_set()
    assert sorted(ids(receiver.verified("/healthy"))) == sorted(a.identifier for _, _, a in messages)
