"""The agent's Ed25519 identity: generated on the host, the private half never leaves it."""

from __future__ import annotations

import base64
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from authlib.oauth2.rfc7523 import private_key_jwt_sign
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc.jwk import OKPKey

from .protocol import ASSERTION_MAX_LIFETIME_S

if TYPE_CHECKING:
    from .link import Link

# RFC 9864 renames EdDSA to Ed25519; the protocol pins the name EdDSA, which joserfc warns of.
warnings.filterwarnings("ignore", message="EdDSA is deprecated", category=Warning)

ALGORITHM = "EdDSA"


def generate(path: Path) -> Ed25519PrivateKey:
    """Write a new key to `path`, readable by its owner only (created 0600, never widened)."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".new")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return key


def load(path: Path) -> Ed25519PrivateKey:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise PermissionError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 key")
    return key


def public_b64(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def assertion(key: Ed25519PrivateKey, agent_id: str, token_url: str) -> str:
    """A one-time client assertion (RFC 7523) for the token endpoint at `token_url`."""
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    signed = private_key_jwt_sign(
        OKPKey.import_key(pem),
        agent_id,
        token_url,
        alg=ALGORITHM,
        expires_in=ASSERTION_MAX_LIFETIME_S - 60,
    )
    return signed.decode() if isinstance(signed, bytes) else str(signed)


def settle_rotation(link: Link, current: Path, pending: Path) -> None:
    """Finish a rotation that was cut off between asking the cloud and replacing the file.

    The cloud holds either the current key or the pending one; keep whichever it accepts.
    Without a pending file there is nothing to settle. The link is left authenticated with
    the key that is current afterwards.
    """
    if not pending.exists():
        return
    new_key = load(pending)
    if link.accepts(new_key):
        os.replace(pending, current)
        link.use_key(new_key)
    else:
        pending.unlink()
