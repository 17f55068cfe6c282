"""The vault's errors: each says what is wrong and, where it can, what to do."""

from __future__ import annotations


class VaultError(Exception):
    """Base of every error the vault raises on purpose."""


class NotARepository(VaultError):
    pass


class RepositoryExists(VaultError):
    pass


class NewerFormat(VaultError):
    pass


class WrongKey(VaultError):
    """No key slot opens with the passphrase or recovery key given."""


class Corrupted(VaultError):
    """An object failed authentication or does not parse: it was changed or damaged."""

    def __init__(self, what: str, detail: str = "") -> None:
        self.what = what
        super().__init__(f"{what} is damaged{': ' + detail if detail else ''}")


class MissingObject(VaultError):
    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"{key} is missing from the repository")


class SnapshotNotFound(VaultError):
    pass


class Locked(VaultError):
    pass


class NoSpace(VaultError):
    """The back end ran out of space; what was written so far is left consistent."""


class NeedsSecondKeySlot(VaultError):
    """A module may not replace a user's files with a stub until the key has two slots."""


class IncompleteRestore(VaultError):
    """Some files could not be restored; `damaged` names them, the rest were restored."""

    def __init__(self, damaged: dict[str, str]) -> None:
        self.damaged = damaged
        names = ", ".join(sorted(damaged)[:5]) + (" ..." if len(damaged) > 5 else "")
        super().__init__(f"{len(damaged)} file(s) could not be restored: {names}")
