"""The `citybrain` command: faust's CLI (worker, agents, ...) plus the project's own commands,
with every stage registered."""

from __future__ import annotations

import sys

import agents.approval  # noqa: F401  registers the approval agent and the drafts API
import agents.cameras  # noqa: F401  registers the road camera agent
import agents.cap_feed  # noqa: F401  registers the CAP feed agent and its pages
import agents.city_map  # noqa: F401  registers the map page
import agents.evacuation  # noqa: F401  registers the flood zone and evacuation agents
import agents.health  # noqa: F401  registers the health-code agents
import agents.ngsi_ld  # noqa: F401  registers the NGSI-LD pages
import agents.nowcast_check  # noqa: F401  registers nowcast-check and what-if
import agents.parking  # noqa: F401  registers the car park agents
import agents.rain  # noqa: F401  registers the rain agents
import agents.reports  # noqa: F401  registers the residents' report agents
import agents.traffic  # noqa: F401  registers the traffic agents
import agents.waterlogging  # noqa: F401  registers the waterlogging agent
import agents.webhook_api  # noqa: F401  registers the subscriptions API
import agents.webhooks
import streams.tools.commands  # noqa: F401  registers simulate, replay, topics, bench, watch
from streams.app import app
from streams.clients import check_access
from streams.privacy import Keyring
from streams.settings import settings


def main() -> None:
    if "worker" in sys.argv[1:]:  # also after faust's own options: `citybrain -l info worker`
        try:  # a worker reads personal identifiers: without a key it must not start at all
            Keyring(settings().privacy_keys)
            agents.webhooks.file_subscriptions()  # nor with subscriptions it cannot deliver to
        except ValueError as exc:
            raise SystemExit(f"citybrain worker: {exc}") from None
        try:  # nor with credentials Kafka or Redis refuses: it would retry them for ever
            check_access(settings())
        except SystemExit as exc:
            raise SystemExit(f"citybrain worker: {exc.code}") from None
    app.main()
