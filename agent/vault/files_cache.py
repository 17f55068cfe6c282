"""The files cache: what the newest snapshot of a source holds, on the storing host's disk.

A store reuses the chunks of every file whose fingerprint (`Source.change`) is the one the
newest snapshot of the same source recorded, without reading the file. Finding that
snapshot in the repository means opening every snapshot there (their names are random and
their host and source are inside the sealed body), so a store slowed down as history grew:
with 1,000 snapshots, most of a second store went on decrypting the other 999. The
cache keeps, per host and source, the file list of the last snapshot this host stored of
it; the repository is read only when that entry is missing or unreadable, and then only
once.

An entry is sealed with the repository's key and bound to its repository, host and
source, so a cache edited or copied between repositories is never believed: it is
treated as missing. A cached entry never stands alone either: the store reuses a file's
chunks only when the index still holds every one of them (a prune may have removed
them since). Losing the cache costs one rebuild, never data.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

import zstandard

from .errors import Corrupted

if TYPE_CHECKING:
    from .crypto import Keys
    from .repository import FileEntry

ENV = "DOCKYARD_VAULT_CACHE"


def default_folder() -> Path:
    """`$DOCKYARD_VAULT_CACHE`, else `$XDG_CACHE_HOME/dockyard-vault`, else
    `~/.cache/dockyard-vault`: a cache, so it may be wiped at any time."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dockyard-vault"


class FilesCache:
    """Per host and source, the files of the last snapshot stored from here.

    `folder` None keeps nothing on disk: every store then rebuilds from the repository."""

    def __init__(self, folder: Path | None, keys: Keys, repo_id: str) -> None:
        self.folder = folder / repo_id / "files" if folder is not None else None
        self.keys, self.repo_id = keys, repo_id

    def _entry(self, host: str, source: str) -> tuple[Path, bytes] | None:
        if self.folder is None:
            return None
        name = self.keys.mac(f"files-cache\0{host}\0{source}".encode())[:32]
        return self.folder / name, f"dockyard-vault/v1/files-cache|{self.repo_id}|{name}".encode()

    def load(self, host: str, source: str) -> dict[str, FileEntry] | None:
        """The cached files by name, or None when there is no entry it can trust."""
        from .repository import FileEntry

        entry = self._entry(host, source)
        if entry is None:
            return None
        path, aad = entry
        try:
            sealed = path.read_bytes()
        except OSError:
            return None
        try:
            plain = self.keys.open(sealed, aad, "files cache")
            doc = json.loads(zstandard.ZstdDecompressor().decompress(plain))
            if doc.get("host") != host or doc.get("source") != source:
                return None
            files = [FileEntry.from_json(f) for f in doc["files"]]
        except (Corrupted, ValueError, TypeError, KeyError, AttributeError, zstandard.ZstdError):
            return None  # damaged or not ours: rebuilt from the repository
        return {f.path: f for f in files}

    def save(self, host: str, source: str, files: list[FileEntry]) -> None:
        """Replace the entry atomically; a cache that cannot be written is only slower."""
        entry = self._entry(host, source)
        if entry is None:
            return
        path, aad = entry
        doc = {
            "host": host,
            "source": source,
            "files": [f.to_json() for f in files if f.change is not None],
        }
        sealed = self.keys.seal(
            zstandard.ZstdCompressor(level=3).compress(json.dumps(doc).encode()), aad
        )
        part = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            part.write_bytes(sealed)
            os.replace(part, path)
        except OSError:
            part.unlink(missing_ok=True)
