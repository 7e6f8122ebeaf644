"""Creates the system's topics on the broker, with their partition counts and configs."""

from __future__ import annotations

import logging

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from streams.settings import Settings
from streams.topics import SPECS, partitions_of, topic_name

log = logging.getLogger(__name__)


def ensure_topics(settings: Settings) -> list[str]:
    """Create every missing topic; returns the names created. Existing topics are left as they are."""
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id=f"{settings.app_id}-admin")
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
            wanted.append(NewTopic(name, num_partitions=partitions_of(role, settings), replication_factor=1, topic_configs=configs))
        if wanted:
            try:
                admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                pass  # another worker created them first
        return [t.name for t in wanted]
    finally:
        admin.close()
