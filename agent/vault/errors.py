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


class ConfigMissing(NotARepository):
    """The config is gone but the repository's data is not: a damaged repository."""


class RepositoryDamaged(VaultError):
    """A step that could destroy data refuses while the repository is damaged; `damage`
    names each damaged object and what it affects, and the message says what repairs it."""

    def __init__(self, damage: list[str], advice: str) -> None:
        self.damage = damage
        self.advice = advice
        shown = "; ".join(damage[:3]) + (f"; and {len(damage) - 3} more" if len(damage) > 3 else "")
        super().__init__(f"refusing: {shown}. {advice}")


class Salvaged(VaultError):
    """A salvage restore wrote every file in full length, but some ranges are zeros where
    chunks were damaged or lost: `holes` maps each such file to its (offset, length)."""

    def __init__(self, holes: dict[str, list[tuple[int, int]]]) -> None:
        self.holes = holes
        lost = sum(n for ranges in holes.values() for _, n in ranges)
        super().__init__(
            f"{len(holes)} file(s) restored with {lost} byte(s) of damaged data replaced by zeros"
        )
