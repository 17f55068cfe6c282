"""Keys of a repository: the master key, the keys derived from it, and the key slots.

One random master key per repository. Everything else derives from it with HKDF-SHA256
under a fixed label, so a key never serves two purposes:

- the blob key (AES-256-GCM, a random 96-bit nonce per object, the object's kind and id
  as associated data, so an object moved to another name fails authentication);
- the chunk-id key (keyed BLAKE3 of the plaintext, HMAC-SHA256 in format 1 repositories:
  storage never learns which repositories
  hold the same content, and only the key holder can test for a given content);
- the chunker's gear table (256 values), so chunk boundaries depend on the key too.

The master key is stored only wrapped, in key slots inside the repository's config: one
opened by a passphrase (scrypt), one by a recovery key (256 random bits, shown once as
groups of base32). Either slot opens the repository; a tampered slot fails authentication.
AES-GCM with random nonces is safe for 2^32 objects per key (4 PiB at 1 MiB per chunk).
"""

from __future__ import annotations

import base64
import hmac
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from .errors import Corrupted, VaultError, WrongKey

MASTER_BYTES = 64
NONCE_BYTES = 12
TAG_BYTES = 16
OVERHEAD = NONCE_BYTES + TAG_BYTES
SEAL_SLACK = 15
"""What `seal_into` may need past the end of its output (the cipher's block, less one)."""
# scrypt at N=2^17, r=8 takes 128 MiB and about half a second: a guess costs the same.
SCRYPT_N = 2**17
SCRYPT_R = 8
SCRYPT_P = 1


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode(), validate=True)


def _hkdf(secret: bytes, label: str, length: int) -> bytes:
    return HKDF(hashes.SHA256(), length, salt=None, info=label.encode()).derive(secret)


ID_HASHES = ("blake3", "hmac-sha256")
"""Keyed hashes for chunk ids: BLAKE3 in keyed mode (format 2, 3.5x faster here) and
HMAC-SHA256 (format 1 repositories keep it)."""


class Keys:
    """The keys one open repository works with; built from its master key."""

    def __init__(self, master: bytes, id_hash: str = "hmac-sha256") -> None:
        if len(master) != MASTER_BYTES:
            raise VaultError("a master key has 64 bytes")
        if id_hash not in ID_HASHES:
            raise VaultError(f"unknown chunk id hash {id_hash!r}: upgrade the agent")
        self.id_hash = id_hash
        self.master = master
        self._blob_key = _hkdf(master, "dockyard-vault/v1/blob", 32)
        self._aead = AESGCM(self._blob_key)
        self._id_key = _hkdf(master, "dockyard-vault/v1/chunk-id", 32)
        self.gear = _hkdf(master, "dockyard-vault/v1/gear", 256 * 8)
        self.mac_key = _hkdf(master, "dockyard-vault/v1/mac", 32)

    def chunk_id(self, data: bytes | memoryview) -> bytes:
        if self.id_hash == "blake3":
            return blake3.blake3(data, key=self._id_key).digest()
        return hmac.digest(self._id_key, data, "sha256")

    def seal(self, data: bytes | memoryview, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, data, aad)

    def seal_into(self, parts: Sequence[bytes | memoryview], aad: bytes, out: memoryview) -> int:
        """`seal` of the parts joined, written into `out` without joining them; the bytes
        written are returned. A store seals each chunk as a kind byte and its body straight
        into the pack's buffer: joining them first, then adding the nonce, cost two copies
        and two fresh allocations per chunk. `out` needs SEAL_SLACK bytes past the sealed
        size (the cipher writes whole blocks)."""
        nonce = os.urandom(NONCE_BYTES)
        out[:NONCE_BYTES] = nonce
        enc = Cipher(algorithms.AES(self._blob_key), modes.GCM(nonce)).encryptor()
        enc.authenticate_additional_data(aad)
        at = NONCE_BYTES
        for part in parts:
            at += enc.update_into(part, out[at:])
        rest = enc.finalize()  # empty for GCM, which writes as it goes
        out[at : at + len(rest)] = rest
        at += len(rest)
        out[at : at + TAG_BYTES] = enc.tag
        return at + TAG_BYTES

    def open(self, sealed: bytes | memoryview, aad: bytes, what: str) -> bytes:
        if len(sealed) < OVERHEAD:
            raise Corrupted(what, "shorter than its authentication tag")
        view = memoryview(sealed)
        try:
            return self._aead.decrypt(bytes(view[:NONCE_BYTES]), view[NONCE_BYTES:], aad)
        except InvalidTag:
            raise Corrupted(what, "authentication failed (changed, truncated or foreign)") from None

    def open_into(
        self, sealed: memoryview, aad: bytes, into: bytearray | memoryview, what: str
    ) -> memoryview:
        """`open` into a caller's buffer (at least the plaintext's size); the plaintext's
        view of it is returned, valid until the buffer is used again."""
        if len(sealed) < OVERHEAD:
            raise Corrupted(what, "shorter than its authentication tag")
        size = len(sealed) - OVERHEAD
        if size > len(into):
            raise Corrupted(what, "longer than any blob this repository stores")
        out = memoryview(into)[:size]
        try:
            self._aead.decrypt_into(bytes(sealed[:NONCE_BYTES]), sealed[NONCE_BYTES:], aad, out)
        except InvalidTag:
            raise Corrupted(what, "authentication failed (changed, truncated or foreign)") from None
        return out

    def mac(self, data: bytes) -> str:
        return hmac.digest(self.mac_key, data, "sha256").hex()


def new_master() -> bytes:
    return secrets.token_bytes(MASTER_BYTES)


# --- key slots -------------------------------------------------------------------------


@dataclass(frozen=True)
class ScryptCost:
    n: int = SCRYPT_N
    r: int = SCRYPT_R
    p: int = SCRYPT_P


def _slot_aad(repo_id: str, slot_id: str, kind: str) -> bytes:
    return f"dockyard-vault/v1/keyslot|{repo_id}|{slot_id}|{kind}".encode()


def _scrypt(passphrase: str, salt: bytes, cost: ScryptCost) -> bytes:
    kdf = Scrypt(salt=salt, length=32, n=cost.n, r=cost.r, p=cost.p)
    return kdf.derive(passphrase.encode())


def passphrase_slot(
    master: bytes, repo_id: str, passphrase: str, cost: ScryptCost | None = None
) -> dict[str, Any]:
    if len(passphrase) < 8:
        raise VaultError("a passphrase has at least 8 characters")
    cost = cost or ScryptCost()
    slot_id = secrets.token_hex(8)
    salt = secrets.token_bytes(16)
    kek = _scrypt(passphrase, salt, cost)
    nonce = secrets.token_bytes(NONCE_BYTES)
    wrapped = AESGCM(kek).encrypt(nonce, master, _slot_aad(repo_id, slot_id, "passphrase"))
    return {
        "id": slot_id,
        "kind": "passphrase",
        "kdf": {"name": "scrypt", "n": cost.n, "r": cost.r, "p": cost.p, "salt": _b64(salt)},
        "nonce": _b64(nonce),
        "wrapped": _b64(wrapped),
    }


def new_recovery_key() -> str:
    """256 random bits as eight groups of base32, for a person to write down."""
    text = base64.b32encode(secrets.token_bytes(32)).decode().rstrip("=")
    return "-".join(text[i : i + 7] for i in range(0, len(text), 7))


def _recovery_bytes(recovery_key: str) -> bytes:
    text = recovery_key.replace("-", "").replace(" ", "").upper()
    try:
        raw = base64.b32decode(text + "=" * (-len(text) % 8))
    except ValueError:
        raise WrongKey("that is not a recovery key (eight groups of letters and digits)") from None
    if len(raw) != 32:
        raise WrongKey("that is not a recovery key (it has the wrong length)")
    return raw


def recovery_slot(master: bytes, repo_id: str, recovery_key: str) -> dict[str, Any]:
    slot_id = secrets.token_hex(8)
    kek = _hkdf(_recovery_bytes(recovery_key), "dockyard-vault/v1/recovery", 32)
    nonce = secrets.token_bytes(NONCE_BYTES)
    wrapped = AESGCM(kek).encrypt(nonce, master, _slot_aad(repo_id, slot_id, "recovery"))
    return {"id": slot_id, "kind": "recovery", "nonce": _b64(nonce), "wrapped": _b64(wrapped)}


def _unwrap(slot: dict[str, Any], kek: bytes, repo_id: str) -> bytes | None:
    try:
        aad = _slot_aad(repo_id, str(slot["id"]), str(slot["kind"]))
        return AESGCM(kek).decrypt(_unb64(slot["nonce"]), _unb64(slot["wrapped"]), aad)
    except (InvalidTag, KeyError, ValueError):
        return None


def open_slots(
    slots: list[dict[str, Any]],
    repo_id: str,
    *,
    passphrase: str | None = None,
    recovery_key: str | None = None,
) -> bytes:
    """The master key from the first slot the secret opens; WrongKey if none does.

    A damaged slot is passed over, so the other slots still open the repository; it is
    named only when no slot opens."""
    if passphrase is None and recovery_key is None:
        raise WrongKey("give the repository's passphrase or its recovery key")
    damaged = 0
    for slot in slots:
        kind = slot.get("kind") if isinstance(slot, dict) else None
        if kind == "passphrase" and passphrase is not None:
            kdf = slot.get("kdf", {})
            try:
                cost = ScryptCost(int(kdf["n"]), int(kdf["r"]), int(kdf["p"]))
                kek = _scrypt(passphrase, _unb64(kdf["salt"]), cost)
            except (KeyError, ValueError, TypeError, AttributeError):
                damaged += 1
                continue
        elif kind == "recovery" and recovery_key is not None:
            kek = _hkdf(_recovery_bytes(recovery_key), "dockyard-vault/v1/recovery", 32)
        else:
            continue
        master = _unwrap(slot, kek, repo_id)
        if master is not None:
            return master
    what = "passphrase" if passphrase is not None else "recovery key"
    if damaged:
        raise Corrupted(f"{damaged} passphrase key slot(s)", f"and the {what} opens no other")
    raise WrongKey(f"the {what} does not open this repository")
