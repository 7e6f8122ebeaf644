"""Pseudonymisation at ingestion: personal identifiers become keyed HMAC tokens.

PIPL art. 51 and GB/T 35273-2020 §6.2: de-identify right after collection and keep the key apart.
A token is `<key id>.<HMAC-SHA256 of the identifier, base32>`: the same person or plate always
gives the same token under one key, so state joins on it, and without the key it cannot be
reversed or recomputed from a guess. The key lives only in the worker's settings.

Rotation: list the new key first and keep the old one while stays and codes from before the
rotation are still open; tokens carry their key id, so old and new never mix unnoticed.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
from typing import Any


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
        changes = {f: self.token(f, getattr(value, f)) for f in fields if getattr(value, f, None) is not None}
        return dataclasses.replace(value, **changes) if changes else value


def _token(key_id: str, secret: bytes, kind: str, identifier: str) -> str:
    # The kind keeps a phone number and an ID number that happen to be equal apart; case and
    # spaces are how the same plate or ID number is often written differently.
    normalised = "".join(identifier.split()).upper()
    digest = hmac.new(secret, f"{kind}\x00{normalised}".encode(), hashlib.sha256).digest()
    return f"{key_id}.{base64.b32encode(digest[:20]).decode().lower()}"
