"""Sharing a repository between writers: leases in `locks/`, made with create-if-absent.

A store holds a shared lock, prune an exclusive one. Taking a lock writes `locks/<id>`
(create-if-absent, so two takers never share a name), then lists `locks/`: a shared taker
that sees a live exclusive lock, or an exclusive taker that sees any other live lock,
removes its own and tries again after a random wait. A lock is a lease: it carries an
expiry, a holder thread renews it, and a lock past its expiry is ignored (its holder died)
and may be removed by anyone; so is a lock of this host whose process is gone. This needs
nothing from the store but atomic create-if-absent and list, which local directories and
S3 (conditional writes) both give.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .backends import Backend
from .errors import Locked, MissingObject

LEASE_S = 120.0
RENEW_S = 30.0
SHARED, EXCLUSIVE = "shared", "exclusive"


@dataclass(frozen=True)
class LockInfo:
    key: str
    kind: str
    host: str
    pid: int
    expires: float

    def live(self, now: float) -> bool:
        """Unexpired, and (when held on this host) its process still runs."""
        if self.expires <= now:
            return False
        if self.host == socket.gethostname() and self.pid > 0:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return False  # killed before it could remove its lock
            except PermissionError:
                return True
        return True


def _read(backend: Backend, key: str) -> LockInfo | None:
    try:
        doc: dict[str, Any] = json.loads(backend.get(key))
        return LockInfo(key, doc["kind"], doc["host"], int(doc["pid"]), float(doc["expires"]))
    except MissingObject:
        return None
    except (ValueError, KeyError, TypeError):
        # Lock objects are written whole (create-if-absent), so one that does not parse is
        # damaged, not in progress: it counts as expired and blocks no one.
        return LockInfo(key, EXCLUSIVE, "?", 0, 0.0)


def list_locks(backend: Backend) -> list[LockInfo]:
    found = []
    for key, _size in backend.list("locks/"):
        info = _read(backend, key)
        if info is not None:
            found.append(info)
    return found


class Lock:
    """A held lock; renew it in the background until released."""

    def __init__(
        self,
        backend: Backend,
        kind: str,
        *,
        lease_s: float = LEASE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.backend, self.kind, self.lease_s, self.clock = backend, kind, lease_s, clock
        self.key = f"locks/{secrets.token_hex(16)}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = False

    def _body(self) -> bytes:
        return json.dumps(
            {
                "kind": self.kind,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "expires": self.clock() + self.lease_s,
            }
        ).encode()

    def acquire(self, timeout: float = 0.0) -> Lock:
        """Take the lock, waiting up to `timeout` seconds for conflicting holders."""
        deadline = time.monotonic() + timeout
        attempt = 0
        while True:
            if not self.backend.put_new(self.key, self._body()):
                self.key = f"locks/{secrets.token_hex(16)}"
                continue
            blocking = self._conflicts()
            if not blocking:
                break
            self.backend.delete(self.key)
            if time.monotonic() >= deadline:
                who = ", ".join(f"{b.kind} lock of {b.host} pid {b.pid}" for b in blocking)
                raise Locked(f"the repository is locked ({who}); try again later")
            attempt += 1
            time.sleep(min(2.0, 0.05 * 2 ** min(attempt, 6)) * random.uniform(0.5, 1.0))
        self._thread = threading.Thread(target=self._renew, name="vault-lock", daemon=True)
        self._thread.start()
        return self

    def _conflicts(self) -> list[LockInfo]:
        """The live locks this one conflicts with. A lock whose lease ran out, or whose
        holder on this host is gone, is removed on the way: a killed store's lock must
        not wait for someone to run `clear_stale`."""
        now = self.clock()
        others = []
        for lock in list_locks(self.backend):
            if lock.key == self.key:
                continue
            if lock.live(now):
                others.append(lock)
            else:
                self.backend.delete(lock.key)
        if self.kind == EXCLUSIVE:
            return others
        return [lock for lock in others if lock.kind == EXCLUSIVE]

    def _renew(self) -> None:
        while not self._stop.wait(min(RENEW_S, self.lease_s / 4)):
            try:
                if not self.backend.exists(self.key):
                    # Removed as stale by another taker: the lease is gone for good, and
                    # writing it again would hide that from `check`.
                    self.lost = True
                    return
                self.backend.put(self.key, self._body())
            except Exception:
                self.lost = True

    def check(self) -> None:
        """Before an irreversible step: is the lease still ours and unexpired?"""
        info = _read(self.backend, self.key)
        if self.lost or info is None or not info.live(self.clock()):
            raise Locked("this process's lock lapsed; stopping before changing anything more")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.backend.delete(self.key)

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def clear_stale(backend: Backend, clock: Callable[[], float] = time.time) -> int:
    """Remove locks past their expiry; returns how many."""
    now = clock()
    stale = [lock for lock in list_locks(backend) if not lock.live(now)]
    for lock in stale:
        backend.delete(lock.key)
    return len(stale)
