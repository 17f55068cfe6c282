"""Bearer secrets (API tokens, enrolment tokens): shown once, kept only as a hash.

A SHA-256 of 256 random bits needs no salt or slow hash: nothing can be guessed from it, and
a lookup by hash is one indexed read.
"""

from __future__ import annotations

import hashlib
import secrets


def new_secret(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()
