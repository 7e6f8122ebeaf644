"""Webhook subscriptions managed at run time on the real stack: made, changed and ended over
HTTP with a bearer token, kept on a compacted topic that every worker follows (a second worker
and a restart see them), and an endpoint a 410 disabled taken back by an operator."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from tests.integration.conftest import CityRun
from tests.integration.test_webhooks import SECRET, Receiver, eventually, lifecycle, receiver  # noqa: F401  the fixture

pytestmark = pytest.mark.integration

TOKEN = "an-operators-token-of-some-length"


def call(run: CityRun, method: str, path: str, body: dict | None = None, token: str | None = TOKEN) -> tuple[int, object]:
    request = urllib.request.Request(f"http://127.0.0.1:{run.web_port}{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")
    except urllib.error.URLError:
        return 0, None  # the worker's web server is not up (yet)


def test_subscriptions_made_over_http_reach_every_worker_and_survive_a_restart(city_run, receiver: Receiver):  # noqa: F811
    run = city_run(webhook_api_tokens=TOKEN, webhook_backoff_s=0.2, webhook_timeout_s=2.0)
    run.start_worker()
    eventually(lambda: call(run, "GET", "/webhooks/subscriptions")[0] == 200, what="the worker's web server")
    assert call(run, "GET", "/webhooks/subscriptions", token=None)[0] == 401
    assert call(run, "GET", "/webhooks/subscriptions", token="a guess")[0] == 401
    ops = {"subscription_id": "ops", "url": receiver.url("/ops"), "secrets": [SECRET], "allow_private": True,
           "zones": ["Z1"]}
    assert call(run, "POST", "/webhooks/subscriptions", {**ops, "url": "ftp://nowhere"})[0] == 400
    status, made = call(run, "POST", "/webhooks/subscriptions", ops)
    assert status == 201 and made["secrets"] == 1 and SECRET not in json.dumps(made)
    eventually(lambda: [s["subscription_id"] for s in call(run, "GET", "/webhooks/subscriptions")[1]] == ["ops"],
               what="the subscription read back from its topic")
    assert call(run, "POST", "/webhooks/subscriptions", ops)[0] == 409  # it exists: PUT changes it
    run.publish(lifecycle("rain.Z1", "Z1", steps=("Alert",)) + lifecycle("rain.Z2", "Z2", steps=("Alert",)))
    eventually(lambda: len(receiver.at("/ops")) == 1, what="the Z1 alert delivered")

    # Changed: now Z2 too. A second worker, started after, knows it from the topic alone.
    assert call(run, "PUT", "/webhooks/subscriptions/ops", {**ops, "zones": ["Z1", "Z2"]})[0] == 200
    second = run.start_worker()
    eventually(lambda: (call(run, "GET", "/webhooks/subscriptions/ops")[1] or {}).get("zones") == ["Z1", "Z2"],
               what="the change seen by the second worker")
    run.kill_worker(run.workers[0])
    run.publish(lifecycle("rain.Z2b", "Z2", steps=("Alert",)))
    eventually(lambda: len(receiver.at("/ops")) == 2, what="a Z2 alert delivered under the changed filter")

    # Gone, then taken back by an operator.
    receiver.rules["/ops"] = lambda n: (410, {})
    run.publish(lifecycle("rain.Z1c", "Z1", steps=("Alert",)))
    eventually(lambda: len(receiver.at("/ops")) == 3, what="the 410")
    eventually(lambda: any(k.endswith(":disabled") for k in run.state()), what="the endpoint disabled")
    receiver.rules["/ops"] = lambda n: (200, {})
    assert call(run, "POST", "/webhooks/subscriptions/ops/enable")[0] == 200
    eventually(lambda: not any(run.state().get(k) for k in run.state() if k.endswith(":disabled")),
               what="the endpoint enabled on every partition")
    run.publish(lifecycle("rain.Z1d", "Z1", steps=("Alert",)))
    eventually(lambda: len(receiver.at("/ops")) == 4, what="deliveries again")

    # Ended: nothing more, on any worker.
    assert call(run, "DELETE", "/webhooks/subscriptions/ops")[0] == 200
    eventually(lambda: call(run, "GET", "/webhooks/subscriptions/ops")[0] == 404, what="the deletion read back")
    run.publish(lifecycle("rain.Z1e", "Z1", steps=("Alert",)))
    run.wait_quiet(stages=(("webhooks", "alerts"),))
    assert len(receiver.at("/ops")) == 4
    assert second.poll() is None


def test_a_subscription_made_on_one_worker_reaches_another_that_nobody_asks(city_run, receiver: Receiver):  # noqa: F811
    run = city_run(webhook_api_tokens=TOKEN, partitions=2)
    quiet = run.start_worker()  # follows the map on its own: no request reaches it once it has read it
    eventually(lambda: call(run, "GET", "/webhooks/subscriptions")[0] == 200, what="the quiet worker's map read")
    asked = run.start_worker()
    eventually(lambda: call(run, "GET", "/webhooks/subscriptions")[0] == 200, what="the asked worker's web server")
    ops = {"subscription_id": "ops", "url": receiver.url("/ops"), "secrets": [SECRET], "allow_private": True}
    assert call(run, "POST", "/webhooks/subscriptions", ops)[0] == 201
    assert [s["subscription_id"] for s in call(run, "GET", "/webhooks/subscriptions")[1]] == ["ops"]  # read back at once
    time.sleep(run.settings.reference_refresh_s + 1)  # how long a worker nobody asks may take to know it
    run.kill_worker(asked)  # the quiet worker takes every partition
    run.publish(lifecycle("rain.Z1", "Z1", steps=("Alert",)) + lifecycle("rain.Z2", "Z2", steps=("Alert",)))
    eventually(lambda: len(receiver.at("/ops")) == 2, what="both alerts delivered by the worker nobody asked")
    assert quiet.poll() is None
