"""The stub an archived VM leaves in its folder: where its files went, and proof of it.

Once an archive is read back and verified, the VM's files are replaced by one small file
that names the repository, the snapshot and the hash of the archive's manifest. The stub is
all that stays on the datastore, so it must be trustworthy without being a secret: it holds
no key, password or signed URL (a location with credentials in it is refused), and it
carries a MAC under a key derived from the repository's master key. Only an agent that can
open the repository can make or check a stub, and a stub edited, truncated, or copied from
another repository fails with a message that says which. A stub whose snapshot is gone
from the repository (pruned behind the module's back) is an orphan; the restore names it
(`StubOrphaned`) before it writes anything.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

STUB_NAME = "dockyard-archived.json"
FORMAT = 1
MAX_STUB_BYTES = 64 * 1024
"""A stub is a few hundred bytes; anything longer is not ours and is not parsed."""
_LABEL = b"dockyard-vm/v1/stub"


class StubError(Exception):
    """A stub that cannot be used: `code` to branch on, a sentence for the job's error."""

    code = "stub_invalid"


class StubTampered(StubError):
    code = "stub_tampered"


class StubForeign(StubError):
    code = "stub_foreign"


class StubOrphaned(StubError):
    code = "stub_orphaned"


def stub_key(master: bytes) -> bytes:
    """The stub MAC key: its own label under the repository's master key, so it serves no
    other purpose and a stub cannot be forged from anything the datastore holds."""
    return HKDF(hashes.SHA256(), 32, salt=None, info=_LABEL).derive(master)


@dataclass(frozen=True)
class Stub:
    vm_id: str
    """The VM's identity on its hypervisor (BIOS UUID, libvirt UUID, instance id)."""
    vm_name: str
    hypervisor: str
    repository: str
    """The repository's id (its config names it)."""
    location: str
    """Where the repository is (a directory, s3://bucket/prefix, or `cloud`): no secret."""
    snapshot: str
    manifest_sha256: str
    archived_at: str
    files: int
    size: int
    """Bytes archived (the files' apparent sizes together)."""
    mac: str = field(default="", compare=False)
    """Set by `signed` or read from the file; not part of what it covers."""

    def __post_init__(self) -> None:
        parts = urlsplit(self.location)
        if parts.username or parts.password or parts.query or parts.fragment:
            raise StubError(
                "a stub names where the repository is, never how to get in: the location "
                f"may not carry a user, password or query ({parts.scheme}://{parts.hostname}...)"
            )
        if len(self.manifest_sha256) != 64 or any(
            c not in "0123456789abcdef" for c in self.manifest_sha256
        ):
            raise StubError("the manifest hash is 64 hex digits")

    def _fields(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "mac"}

    def _body(self) -> bytes:
        return json.dumps({"format": FORMAT, **self._fields()}, sort_keys=True).encode()

    def signed(self, key: bytes) -> Stub:
        return replace(self, mac=hmac.digest(key, self._body(), "sha256").hex())

    def dumps(self) -> bytes:
        if not self.mac:
            raise StubError("an unsigned stub is never written")
        doc = {"format": FORMAT, **asdict(self)}
        return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()

    @classmethod
    def loads(cls, raw: bytes) -> Stub:
        """Parse a stub's file; its MAC is checked by `verify`, once the repository is
        open. Anything that is not a whole stub is a `StubError` naming what is wrong."""
        if len(raw) > MAX_STUB_BYTES:
            raise StubError(f"the stub is {len(raw)} bytes, not a Dockyard stub")
        try:
            doc: Any = json.loads(raw)
        except ValueError:
            raise StubTampered("the stub does not parse: truncated or edited") from None
        if not isinstance(doc, dict) or "mac" not in doc:
            raise StubTampered("the stub has no MAC: not a Dockyard stub, or edited")
        if int(doc.get("format", 0)) > FORMAT:
            raise StubError("the stub was written by a newer agent: upgrade this one")
        fields = {k: v for k, v in doc.items() if k != "format"}
        try:
            stub = cls(**fields)
            stub._check_types()
        except (TypeError, ValueError, StubError) as e:
            raise StubTampered(f"the stub's fields are not a stub's: {e}") from None
        return stub

    def _check_types(self) -> None:
        for name, value in asdict(self).items():  # JSON may hold anything
            want = int if name in ("files", "size") else str
            if not isinstance(value, want) or isinstance(value, bool):
                raise TypeError(f"{name} is not a {want.__name__}")

    def verify(self, key: bytes, repository_id: str) -> None:
        """The stub was made with this repository's key, and names this repository."""
        if self.repository != repository_id:
            raise StubForeign(
                f"the stub names repository {self.repository}, not {repository_id}: "
                "open the repository it names"
            )
        want = hmac.digest(key, self._body(), "sha256").hex()
        if not hmac.compare_digest(want, self.mac):
            raise StubTampered(
                "the stub's MAC does not match: it was edited, or made by another key"
            )
