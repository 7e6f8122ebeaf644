"""Pseudonymisation at ingestion: personal identifiers become keyed HMAC tokens.

PIPL art. 51 and GB/T 35273-2020 §6.2: de-identify right after collection and keep the key apart.
A token is `<key id>.<HMAC-SHA256 of the identifier, base32>`: the same person or plate always
gives the same token under one key, so state joins on it, and without the key it cannot be
reversed or recomputed from a guess. The key lives only in the worker's settings.

Rotation: list the new key first and keep the old one listed for a while. New tokens use the new
key; each token read also knows the same identifier's tokens under the older keys still listed
(`Token.earlier`, in memory only), so a car that parked before the rotation still pays when it
leaves after it. People are re-keyed by their token, so their state starts afresh under the new
key and the old one expires (`person_ttl_s`); see the README for the rotation steps.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
from typing import Any

import orjson


class Token(str):
    """A token as a string, and the same identifier's tokens under the older keys of the ring."""

    earlier: tuple[str, ...] = ()


class Keyring:
    """The keys personal identifiers are tokenised with; the first is the current one."""

    def __init__(self, entries: tuple[str, ...]):
        keys = []
        for entry in entries:
            key_id, sep, secret = entry.partition(":")
            if not sep or not key_id or len(secret) < 16 or not key_id.isalnum():
                raise ValueError("CITYBRAIN_PRIVACY_KEYS: each entry is key_id:secret, an alphanumeric id "
                                 "and a secret of at least 16 characters")
            keys.append((key_id, secret.encode()))
        if not keys:
            raise ValueError("CITYBRAIN_PRIVACY_KEYS is not set: personal identifiers cannot be read without a key "
                             "(see README, Privacy)")
        self.keys = keys

    def tokens(self, kind: str, identifier: str) -> list[str]:
        """The identifier's token under each key, the current key's first."""
        return [_token(key_id, secret, kind, identifier) for key_id, secret in self.keys]

    def token(self, kind: str, identifier: str) -> str:
        key_id, secret = self.keys[0]
        return _token(key_id, secret, kind, identifier)

    def pseudonymise(self, value: Any, fields: tuple[str, ...]) -> Any:
        """The record with each of its personal fields replaced by its current token."""
        changes = {}
        for f in fields:
            if getattr(value, f, None) is not None:
                current, *earlier = self.tokens(f, getattr(value, f))
                changes[f] = token = Token(current)
                token.earlier = tuple(earlier)
        return dataclasses.replace(value, **changes) if changes else value


def _token(key_id: str, secret: bytes, kind: str, identifier: str) -> str:
    # The kind keeps a phone number and an ID number that happen to be equal apart; case and
    # spaces are how the same plate or ID number is often written differently.
    normalised = "".join(identifier.split()).upper()
    digest = hmac.new(secret, f"{kind}\x00{normalised}".encode(), hashlib.sha256).digest()
    return f"{key_id}.{base64.b32encode(digest[:20]).decode().lower()}"


# What a dead letter shows in place of a personal identifier.
WITHHELD = "[withheld: personal identifier]"


def without_identifiers(raw: bytes, fields: tuple[str, ...]) -> bytes:
    """The raw event with its personal identifiers withheld; all of it when it cannot be read."""
    if not fields:
        return raw
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return WITHHELD.encode()
    if not isinstance(payload, dict):
        return WITHHELD.encode()
    return orjson.dumps({k: WITHHELD if k in fields else v for k, v in payload.items()})
