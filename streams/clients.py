"""How every process connects to Kafka and Redis (workers, commands, benchmarks and tests), with
the protocol, credentials and CAs the settings give. Secrets go to the clients and nowhere else:
never into a log line, a metric or an error message."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import faust
import redis
import redis.asyncio as aioredis
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError, SaslAuthenticationFailed
from kafka import KafkaAdminClient
from redis.exceptions import RedisClusterException

from streams.settings import Settings

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


def _protocol(s: Settings) -> str:
    protocol = s.kafka_security_protocol.upper()
    if protocol not in PROTOCOLS:
        raise SystemExit(f"CITYBRAIN_KAFKA_SECURITY_PROTOCOL={s.kafka_security_protocol!r}: one of {', '.join(PROTOCOLS)}")
    if protocol.startswith("SASL") and s.kafka_sasl_mechanism not in MECHANISMS:
        raise SystemExit(f"CITYBRAIN_KAFKA_SASL_MECHANISM={s.kafka_sasl_mechanism!r}: one of {', '.join(MECHANISMS)}")
    return protocol


def _tls(ca_file: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file or None)


def kafka_auth(s: Settings) -> dict[str, Any]:
    """Keyword arguments for an aiokafka or kafka-python client, which name them alike."""
    protocol = _protocol(s)
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol.endswith("SSL"):
        options["ssl_context"] = _tls(s.kafka_ca_file)
    if protocol.startswith("SASL"):
        options.update(sasl_mechanism=s.kafka_sasl_mechanism, sasl_plain_username=s.kafka_username,
                       sasl_plain_password=s.kafka_password)
    return options


def broker_credentials(s: Settings) -> faust.types.auth.CredentialsT | None:
    """The same, as faust takes them for the workers' consumer and producer."""
    protocol = _protocol(s)
    context = _tls(s.kafka_ca_file) if protocol.endswith("SSL") else None
    if protocol.startswith("SASL"):
        return faust.SASLCredentials(username=s.kafka_username, password=s.kafka_password,
                                     mechanism=s.kafka_sasl_mechanism, ssl_context=context)
    return faust.SSLCredentials(context) if context is not None else None


def _redis_options(s: Settings) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if s.redis_username:
        options["username"] = s.redis_username
    if s.redis_password:
        options["password"] = s.redis_password
    if s.redis_ca_file:
        options["ssl_ca_certs"] = s.redis_ca_file
    return options


def async_redis(s: Settings) -> aioredis.Redis | aioredis.RedisCluster:
    kind = aioredis.RedisCluster if s.redis_cluster else aioredis.Redis
    return kind.from_url(s.redis_url, **_redis_options(s))


def sync_redis(s: Settings, **options: Any) -> redis.Redis | redis.RedisCluster:
    kind = redis.RedisCluster if s.redis_cluster else redis.Redis
    return kind.from_url(s.redis_url, **_redis_options(s), **options)


def kafka_admin(s: Settings, **options: Any) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=s.kafka_bootstrap, **kafka_auth(s), **options)


def check_access(s: Settings) -> None:
    """Stop at once, saying why, when Kafka or Redis refuses this worker's credentials or
    certificate; one that cannot be reached yet is waited for as usual."""
    asyncio.run(_check_kafka(s))
    where = s.redis_url.split("@")[-1]  # without a password the URL may carry
    try:
        client = sync_redis(s, socket_connect_timeout=5, socket_timeout=5)  # a cluster connects here
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, RedisClusterException) as exc:
        cause = _cause(exc, redis.AuthenticationError)
        if cause is not None:
            user = f" of {s.redis_username!r}" if s.redis_username else ""
            raise SystemExit(f"Redis at {where} refused the credentials{user}: {cause}") from None
        cause = _cause(exc, ssl.SSLError)
        if cause is not None or "certificate" in str(exc):
            raise SystemExit(f"Redis at {where}: its certificate is not trusted ({cause or exc}); "
                             "check CITYBRAIN_REDIS_CA_FILE") from None
        # Not up yet: the worker waits for it as it always has.


def _cause(exc: BaseException | None, kind: type[BaseException]) -> BaseException | None:
    """The exception of `kind` behind `exc`, however deep a client wrapped it."""
    while exc is not None:
        if isinstance(exc, kind):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


async def _check_kafka(s: Settings) -> None:
    # One connection of the client's own, which raises what the broker said; a client bootstrapping
    # would only say that it could not.
    options = {k: v for k, v in kafka_auth(s).items() if k != "security_protocol"}
    for address in s.kafka_bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            conn = await create_conn(host, int(port), security_protocol=_protocol(s), **options)
        except ssl.SSLError as exc:
            raise SystemExit(f"Kafka at {address}: its certificate is not trusted ({exc.reason}); "
                             "check CITYBRAIN_KAFKA_CA_FILE") from None
        except SaslAuthenticationFailed:
            raise SystemExit(f"Kafka at {address} refused the credentials of {s.kafka_username!r} "
                             f"({s.kafka_sasl_mechanism}); check CITYBRAIN_KAFKA_USERNAME and the password") from None
        except (OSError, KafkaError):
            continue  # not up yet, or not this one: the worker waits for it as it always has
        conn.close()
        return
