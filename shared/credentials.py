"""API keys are stored and compared as SHA-256 hashes; this is the one place that hashes them."""

from __future__ import annotations

import hashlib


def hash_api_key(api_key: str) -> str:
    """What goes in ``SMARTSEG_API_KEY_HASHES`` for a key (``smartseg keys hash KEY`` prints it)."""
    return hashlib.sha256(api_key.encode()).hexdigest()
