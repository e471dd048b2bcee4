"""API keys: ``Authorization: Bearer <key>``. Keys live in settings as SHA-256 hashes, never in clear."""

from __future__ import annotations

import hmac

from smartseg.shared.credentials import hash_api_key
from smartseg.shared.errors import Unauthorized

OWNER_ID_CHARS = 16


class ApiKeys:
    """Turns a bearer token into the owner id that scopes every job (a prefix of the key's hash)."""

    def __init__(self, key_hashes: list[str]) -> None:
        self._hashes = [value.strip().lower() for value in key_hashes if value.strip()]

    def owner_for(self, authorization: str | None) -> str:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        digest = hash_api_key(token.strip())
        # Compare against every configured hash so timing says nothing about which one matched.
        matched = False
        for known in self._hashes:
            matched |= hmac.compare_digest(digest, known)
        if not matched:
            raise Unauthorized("unknown API key")
        return digest[:OWNER_ID_CHARS]
