"""Creates the system's topics on the broker, with their partition counts and configs."""

from __future__ import annotations

import logging
import time

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError

from streams.clients import kafka_admin
from streams.settings import Settings
from streams.topics import SPECS, partitions_of, topic_name

log = logging.getLogger(__name__)


def existing_topics(settings: Settings) -> set[str]:
    """The topics the broker has."""
    admin = kafka_admin(settings, client_id=f"{settings.app_id}-admin")
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


def ensure_topics(settings: Settings) -> list[str]:
    """Create every missing topic; returns the names created. Existing topics are left as they are."""
    admin = kafka_admin(settings, client_id=f"{settings.app_id}-admin")
    try:
        existing = set(admin.list_topics())
        wanted = []
        # faust's own leader-election topic, which it may not declare itself here.
        leader = f"{settings.app_id}-__assignor-__leader"
        if leader not in existing:
            wanted.append(NewTopic(leader, num_partitions=1, replication_factor=1))
        for role, spec in SPECS.items():
            name = topic_name(role, settings)
            if name in existing:
                continue
            configs = {"cleanup.policy": "compact"} if spec.compacted else {}
            wanted.append(NewTopic(name, num_partitions=partitions_of(role, settings), replication_factor=1,
                                   topic_configs=configs))
        if wanted:
            try:
                admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                pass  # another worker created them first
            _wait_until_led(admin, [t.name for t in wanted])
        return [t.name for t in wanted]
    finally:
        admin.close()


def _wait_until_led(admin: KafkaAdminClient, names: list[str], timeout_s: float = 60.0) -> None:
    """Return once the broker's metadata shows a leader for every partition of the new topics.

    A worker that joins its group before then is assigned nothing for the topics it cannot see,
    and would wait for its next metadata refresh (minutes) to start work.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            topics = admin.describe_topics(names)
            waiting = [t["name"] for t in topics if t["error_code"] or not t["partitions"]
                       or any(p["error_code"] or p["leader_id"] < 0 for p in t["partitions"])]
        except UnknownTopicOrPartitionError:
            waiting = names  # not in the broker's metadata yet
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"topics without a leader after {timeout_s:.0f} s: {', '.join(sorted(waiting))}")
        time.sleep(0.2)
