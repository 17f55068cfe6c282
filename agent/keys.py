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

from .errors import KeyFileError
from .protocol import ASSERTION_MAX_LIFETIME_S

if TYPE_CHECKING:
    from .link import Link

# RFC 9864 renames EdDSA to Ed25519; the protocol pins the name EdDSA, which joserfc warns of.
warnings.filterwarnings("ignore", message="EdDSA is deprecated", category=Warning)

ALGORITHM = "EdDSA"


def new() -> Ed25519PrivateKey:
    """A new key, in memory only until `save`."""
    return Ed25519PrivateKey.generate()


def generate(path: Path) -> Ed25519PrivateKey:
    """Write a new key to `path` (see `save`)."""
    key = new()
    save(key, path)
    return key


def save(key: Ed25519PrivateKey, path: Path) -> None:
    """Write `key` to `path`, readable by its owner only (created 0600, never widened)."""
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


def check(path: Path) -> None:
    """Refuse (`KeyFileError`) a key file that is missing or that others may read, without
    reading it: `load` refuses to use such a key, `status` only warns of it."""
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError as e:
        raise KeyFileError(
            f"the agent's key file {path} is missing; restore it from a backup, or "
            "`dockyard-agent undock` and dock again"
        ) from e
    except OSError as e:
        raise KeyFileError(f"cannot read the agent's key file {path}: {e.strerror}") from e
    if mode & 0o077:
        raise KeyFileError(
            f"the agent's key file {path} may be read by others (mode {mode:03o}); "
            f"the agent will not use it until `chmod 600 {path}`"
        )


def load(path: Path) -> Ed25519PrivateKey:
    """The key in `path`, refused (`KeyFileError`, nothing read) if others may read it."""
    check(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise KeyFileError(f"{path} does not hold the agent's key ({type(e).__name__})") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} does not hold an Ed25519 key")
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
