"""Webhook subscriptions managed at run time, over HTTP on every worker:

  GET    /webhooks/subscriptions                 every subscription (secrets never shown)
  POST   /webhooks/subscriptions                 make one (a Subscription as JSON)
  GET    /webhooks/subscriptions/{id}            one
  PUT    /webhooks/subscriptions/{id}            make or replace one (the whole subscription, secrets too)
  DELETE /webhooks/subscriptions/{id}            end one
  POST   /webhooks/subscriptions/{id}/enable     take deliveries again after a 410 disabled it

Every request carries `Authorization: Bearer <token>`, a token of `webhook_api_tokens` (none set:
the API is closed). A change goes onto the compacted `webhooks.subscriptions` topic, which every
worker follows with the city map, so every worker delivers by it within `reference_refresh_s`
(the one asked at once) and a restart keeps it. The subscriptions of the settings' file are
shown, never changed here.
"""

from __future__ import annotations

import hmac
import time
from typing import Any

import orjson
from faust.web import Request, Response, View

from agents.webhooks import check_subscription, file_subscriptions, subscriptions
from schemas.contract import Rejected, encode, from_dict, to_dict
from schemas.webhooks import DeliveryOutcome, Subscription
from streams import runtime, topics
from streams.app import app
from streams.settings import settings
from streams.topics import partitions_of, topic_name


def authorised(header: str, tokens: tuple[str, ...]) -> bool:
    """Whether an Authorization header carries one of the tokens (compared in constant time)."""
    scheme, _, token = header.partition(" ")
    return scheme.lower() == "bearer" and bool(token) and any(
        hmac.compare_digest(token.strip().encode(), t.encode()) for t in tokens)


def listed(sub: Subscription, source: str) -> dict[str, Any]:
    """A subscription as the API shows it: how many secrets it has, never what they are."""
    return {**to_dict(sub), "secrets": len(sub.secrets), "source": source}


def proposed(body: bytes, subscription_id: str | None = None) -> Subscription:
    """The subscription a request's body asks for, checked as the worker checks its file's."""
    try:
        payload = orjson.loads(body)
        if subscription_id is not None and isinstance(payload, dict):
            payload = {**payload, "subscription_id": subscription_id}
        return check_subscription(from_dict(Subscription, payload))
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"the body is not JSON: {exc}") from None
    except Rejected as exc:
        raise ValueError(exc.reason) from None


class OperatorView(View):
    """The operators' API (subscriptions here, draft alerts in agents/approval.py): a bearer
    token first, then what each path does."""

    async def dispatch(self, request: Any) -> Any:
        if not authorised(request.headers.get("Authorization", ""), settings().webhooks.api_tokens):
            return self.error(401, "a bearer token of CITYBRAIN_WEBHOOK_API_TOKENS is needed",
                              headers={"WWW-Authenticate": "Bearer"})
        return await super().dispatch(request)


class SubscriptionsBase(OperatorView):
    async def dispatch(self, request: Any) -> Any:
        await runtime.current_city(now=True)  # the subscriptions are read with the map: all that was published
        return await super().dispatch(request)

    async def publish(self, subscription_id: str, sub: Subscription | None) -> None:
        """Onto the compacted topic (None: a tombstone), waiting until Kafka has it."""
        # The producer itself: a topic's send would serialize the tombstone's None into a value.
        await app.producer.send_and_wait(topic_name("webhook_subscriptions"), subscription_id.encode(),
                                         encode(sub) if sub else None, None, None, None)
        await runtime.current_city(now=True)  # this worker delivers by it at once

    def refuse_file(self, subscription_id: str) -> Response | None:
        if subscription_id in file_subscriptions():
            return self.error(409, f"{subscription_id} is in the settings' file: change it there")
        return None


@app.page("/webhooks/subscriptions")
class SubscriptionsView(SubscriptionsBase):
    async def get(self, request: Request) -> Response:
        files = file_subscriptions()
        return self.json([listed(sub, "file" if sid in files else "api") for sid, sub in sorted(subscriptions().items())])

    async def post(self, request: Request) -> Response:
        try:
            sub = proposed(await request.read())
        except ValueError as exc:
            return self.error(400, str(exc))
        refused = self.refuse_file(sub.subscription_id)
        if refused is not None:
            return refused
        if sub.subscription_id in subscriptions():
            return self.error(409, f"{sub.subscription_id} exists: PUT changes it")
        await self.publish(sub.subscription_id, sub)
        return self.json(listed(sub, "api"), status=201)


@app.page("/webhooks/subscriptions/{subscription_id}")
class SubscriptionView(SubscriptionsBase):
    async def get(self, request: Request, subscription_id: str) -> Response:
        sub = subscriptions().get(subscription_id)
        if sub is None:
            return self.error(404, f"no subscription {subscription_id}")
        return self.json(listed(sub, "file" if subscription_id in file_subscriptions() else "api"))

    async def put(self, request: Request, subscription_id: str) -> Response:
        refused = self.refuse_file(subscription_id)
        if refused is not None:
            return refused
        try:
            sub = proposed(await request.read(), subscription_id)
        except ValueError as exc:
            return self.error(400, str(exc))
        await self.publish(subscription_id, sub)
        return self.json(listed(sub, "api"))

    async def delete(self, request: Request, subscription_id: str) -> Response:
        refused = self.refuse_file(subscription_id)
        if refused is not None:
            return refused
        if subscription_id not in subscriptions():
            return self.error(404, f"no subscription {subscription_id}")
        await self.publish(subscription_id, None)
        return self.json({"deleted": subscription_id})


@app.page("/webhooks/subscriptions/{subscription_id}/enable")
class EnableView(SubscriptionsBase):
    async def post(self, request: Request, subscription_id: str) -> Response:
        """Every partition of the deliveries hears it, as each heard of the 410."""
        if subscription_id not in subscriptions():
            return self.error(404, f"no subscription {subscription_id}")
        word = DeliveryOutcome(f"enable.{subscription_id}", subscription_id, 0, "enabled", time.time())
        for p in range(partitions_of("webhook_outcomes")):
            await (await topics.webhook_outcomes.send(key=subscription_id.encode(), value=encode(word), partition=p))
        return self.json({"enabled": subscription_id})
