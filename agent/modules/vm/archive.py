"""Archive a VM that was left off into the vault and leave a stub; restore it on request.

One rule above the rest (DESIGN.md, "Nothing lost"): a VM's files are replaced by the stub
only after the archive was read back from the storage itself and matched the hashes taken
while the hypervisor's bytes were read, with the VM kept from powering on throughout and
its files checked unchanged just before the first delete. Every step is a row in the
module's SQLite (`archive_jobs`) written before the next step starts, so a process killed
at any point finds its place again:

    archive: begun -> fenced -> stored -> verified -> deleting -> deleted -> done
             (a roll back whose endpoint does not answer: -> unfencing -> done)
    restore: begun -> writing -> written -> registered -> done

Before `deleting`, an archive that stops is rolled back: the VM is unfenced and whole where
it was, and the snapshot's pin is released (prune may take it). When the endpoint itself is
what failed (unreachable mid-read), the fence cannot be lifted at once: the job stays in the
journal at `unfencing` and `settle` lifts it once the endpoint answers again, so a VM is
never left a template that nobody remembers fencing. From `deleting` on, the
archive is the verified copy, so the next run goes forward: it deletes what is left and
writes the stub. A restore never removes the stub before every file is back, hashed and
the VM registered and compared with the manifest, so until then the archive is still the
VM; a restore that stops removes the files it wrote (copies) and can run again.

`crashpoint` names (`ARCHIVE_POINTS`, `RESTORE_POINTS`) let the kill -9 test stop the
process at each of these places.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from ...crashpoints import crashpoint
from ...protocol.vm import ArchiveRecord, ArchiveRules, FileRole, LifeState, RestorePlace
from ...vault.errors import VaultError
from ...vault.repository import Repository, Source, read_config
from .drivers.base import DriverError, VmInfo
from .manifest import (
    MANIFEST_NAME,
    ArchivedFile,
    ArchiveMismatch,
    Manifest,
    verify_readback,
)
from .readahead import ReadAhead
from .store import VmStore
from .stub import Stub, StubOrphaned, StubTampered, stub_key
from .vmfiles import ExternalFile, VmFile, VmFiles

ARCHIVE_POINTS = (
    "archive_mid_read",
    "archive_after_store",
    "archive_after_verify",
    "archive_mid_delete",
    "archive_after_stub",
)
RESTORE_POINTS = (
    "restore_mid_write",
    "restore_after_write",
    "restore_after_register",
)
REPOINT_POINT = "restore_mid_repoint"
"""Inside a restore elsewhere's repoint, where the hypervisor's takes more than one step
(libvirt: the stub copied beside the moved disk, the domain not yet redefined)."""
try:  # the S3 back end's client: its connection errors are the repository unreachable
    from botocore.exceptions import ConnectionError as _BotoConnectionError
    from botocore.exceptions import HTTPClientError as _BotoHttpError

    _S3_UNREACHABLE: tuple[type[Exception], ...] = (_BotoConnectionError, _BotoHttpError)
except ImportError:  # pragma: no cover - without the s3 extra there is no S3 repository
    _S3_UNREACHABLE = ()
PROGRESS_EVERY_S = 0.5
"""Job events at least once a second while bytes move (twice, so one lost is no gap)."""


class ArchiveFailed(Exception):
    """A job error: `code` for the job, a sentence saying what happened to the VM."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


Report = Callable[[float, str], None]
OpenRepository = Callable[[], Repository]


@dataclass
class Job:
    endpoint: str
    native_id: str
    kind: str
    step: str
    snapshot: str | None = None
    manifest: Manifest | None = None
    placement: dict[str, str] | None = None
    stored_bytes: int = 0
    done: tuple[str, ...] = ()
    requested_by: str | None = None
    relocated: dict[str, str] | None = None
    """A restore's moved files: archive name -> where it is written instead."""


class Journal:
    """The archive and restore steps of each VM, and each VM's life state, in vm.sqlite."""

    def __init__(self, store: VmStore) -> None:
        self.store = store

    def job(self, endpoint: str, native_id: str) -> Job | None:
        with self.store.tx() as db:
            row = db.execute(
                "SELECT kind, step, snapshot, manifest, placement, stored_bytes, done,"
                " requested_by, relocated FROM archive_jobs"
                " WHERE endpoint = ? AND native_id = ?",
                (endpoint, native_id),
            ).fetchone()
        if row is None:
            return None
        return Job(
            endpoint,
            native_id,
            row[0],
            row[1],
            row[2],
            Manifest.from_bytes(row[3].encode()) if row[3] else None,
            json.loads(row[4]) if row[4] else None,
            int(row[5] or 0),
            tuple(json.loads(row[6] or "[]")),
            row[7],
            json.loads(row[8]) if row[8] else None,
        )

    def jobs(self) -> list[Job]:
        with self.store.tx() as db:
            keys = db.execute("SELECT endpoint, native_id FROM archive_jobs").fetchall()
        return [j for e, n in keys if (j := self.job(e, n)) is not None]

    def claim(
        self, endpoint: str, native_id: str, kind: str, now: datetime, by: str | None = None
    ) -> Job:
        """The VM's job of this kind (a new one, or the one a crash left); another job of
        the other kind on the same VM is refused: one archive or restore at a time."""
        with self.store.tx() as db:
            row = db.execute(
                "SELECT kind FROM archive_jobs WHERE endpoint = ? AND native_id = ?",
                (endpoint, native_id),
            ).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO archive_jobs (endpoint, native_id, kind, step, started_at,"
                    " updated_at, requested_by) VALUES (?, ?, ?, 'begun', ?, ?, ?)",
                    (endpoint, native_id, kind, now.isoformat(), now.isoformat(), by),
                )
            elif row[0] != kind:
                raise ArchiveFailed(
                    "busy", f"{endpoint}/{native_id}: a {row[0]} is under way; try again after"
                )
        job = self.job(endpoint, native_id)
        assert job is not None
        return job

    COLUMNS = frozenset({"snapshot", "manifest", "placement", "stored_bytes", "done", "relocated"})
    """The columns `step` may set with it."""

    def step(self, job: Job, step: str, now: datetime, **fields: Any) -> None:
        assert set(fields) <= self.COLUMNS, fields  # column names come from here only
        sets, args = ["step = ?", "updated_at = ?"], [step, now.isoformat()]
        for name, value in fields.items():
            sets.append(f"{name} = ?")
            if name == "manifest":
                args.append(value.to_bytes().decode())
            elif name in ("placement", "done", "relocated"):
                args.append(json.dumps(value))
            else:
                args.append(value)
            setattr(job, name, tuple(value) if name == "done" else value)
        with self.store.tx() as db:
            db.execute(
                f"UPDATE archive_jobs SET {', '.join(sets)}"  # noqa: S608 - names from COLUMNS
                " WHERE endpoint = ? AND native_id = ?",
                (*args, job.endpoint, job.native_id),
            )
        job.step = step

    def end(self, job: Job) -> None:
        with self.store.tx() as db:
            db.execute(
                "DELETE FROM archive_jobs WHERE endpoint = ? AND native_id = ?",
                (job.endpoint, job.native_id),
            )

    def set_life(
        self,
        endpoint: str,
        native_id: str,
        state: LifeState,
        now: datetime,
        reason: str | None = None,
        record: ArchiveRecord | None = None,
    ) -> None:
        with self.store.tx() as db:
            db.execute(
                "INSERT INTO life (endpoint, native_id, state, reason, since, record)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (endpoint, native_id) DO UPDATE SET"
                " state = excluded.state, reason = excluded.reason, since = excluded.since,"
                " record = COALESCE(excluded.record, life.record)",
                (
                    endpoint,
                    native_id,
                    state.value,
                    reason,
                    now.isoformat(),
                    record.model_dump_json() if record else None,
                ),
            )

    def life(
        self, endpoint: str, native_id: str
    ) -> tuple[LifeState, str | None, ArchiveRecord | None] | None:
        with self.store.tx() as db:
            row = db.execute(
                "SELECT state, reason, record FROM life WHERE endpoint = ? AND native_id = ?",
                (endpoint, native_id),
            ).fetchone()
        if row is None:
            return None
        record = ArchiveRecord.model_validate_json(row[2]) if row[2] else None
        return LifeState(row[0]), row[1], record

    def lives(self) -> dict[tuple[str, str], tuple[LifeState, str | None, ArchiveRecord | None]]:
        with self.store.tx() as db:
            rows = db.execute(
                "SELECT endpoint, native_id, state, reason, record FROM life"
            ).fetchall()
        return {
            (e, n): (
                LifeState(s),
                r,
                ArchiveRecord.model_validate_json(rec) if rec else None,
            )
            for e, n, s, r, rec in rows
        }


class _Meter:
    """Bytes done of a total, told as a fraction and a sentence at most every half second."""

    def __init__(self, total: int, report: Report | None, doing: str) -> None:
        self.total = max(1, total)
        self.done = 0
        self.report = report
        self.doing = doing
        self.started = time.monotonic()
        self._last = 0.0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.done += n
            now = time.monotonic()
            if self.report is None or now - self._last < PROGRESS_EVERY_S:
                return
            self._last = now
        self.tell()

    def tell(self) -> None:
        if self.report is None:
            return
        elapsed = max(1e-6, time.monotonic() - self.started)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        self.report(
            min(1.0, self.done / self.total),
            f"{self.doing}: {_size(self.done)} of {_size(self.total)}, "
            f"{rate / 1e6:.0f} MB/s, {left:.0f} s left",
        )


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


class _HashingWriter(io.RawIOBase):
    """What a restore writes back, hashed on the way (compared with the manifest)."""

    def __init__(self, inner: BinaryIO, meter: _Meter | None, crash: Callable[[], None]) -> None:
        self.inner = inner
        self.hash = hashlib.sha256()
        self.size = 0
        self.meter = meter
        self.crash = crash

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.inner.write(view)
        self.hash.update(view)
        self.size += len(view)
        if self.meter:
            self.meter.add(len(view))
        if self.size >= 1 << 20:
            self.crash()
        return len(view)


class Archiver:
    """The archive and restore of one module's VMs; `files` comes per endpoint."""

    def __init__(self, store: VmStore, state_dir: Path, clock: Callable[[], datetime]) -> None:
        self.journal = Journal(store)
        self.state_dir = state_dir
        self.clock = clock

    def _crash(self, point: str) -> None:
        crashpoint(point, self.state_dir)

    @contextmanager
    def exclusive(self, endpoint: str, native_id: str, doing: str) -> Iterator[None]:
        """One archive or restore of a VM at a time, across threads and processes (the
        agent's handler and a shell's `vm restore`): an flock on a file per VM, which the
        kernel releases when a holder dies, so a crashed job never blocks its resumption."""
        folder = self.state_dir / "locks"
        folder.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256(f"{endpoint}/{native_id}".encode()).hexdigest()[:32]
        with open(folder / f"{name}.lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ArchiveFailed(
                    "busy", f"{endpoint}/{native_id}: another archive or restore is running"
                ) from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # --- archive -----------------------------------------------------------------------

    def archive(
        self,
        endpoint: str,
        vm: VmInfo,
        files: VmFiles,
        rules: ArchiveRules,
        open_repo: OpenRepository,
        report: Report | None = None,
    ) -> ArchiveRecord:
        with self.exclusive(endpoint, vm.native_id, "archive"):
            return self._archive(endpoint, vm, files, rules, open_repo, report)

    def _archive(
        self,
        endpoint: str,
        vm: VmInfo,
        files: VmFiles,
        rules: ArchiveRules,
        open_repo: OpenRepository,
        report: Report | None,
    ) -> ArchiveRecord:
        now = self.clock()
        job = self.journal.claim(endpoint, vm.native_id, "archive", now)
        if job.step == "unfencing":
            # A roll back that could not reach the endpoint: finish it, then start afresh.
            self._settle(job, vm, files)
            job = self.journal.claim(endpoint, vm.native_id, "archive", now)
        try:
            repo = open_repo()
            if job.step in ("begun", "fenced"):
                try:
                    repo.require_second_slot()
                except VaultError as e:
                    raise ArchiveFailed("single_key_slot", str(e)) from None
                if job.step == "begun":
                    self._begin(job, vm, files)
                self._store(job, vm, files, rules, repo, report)
            if job.step == "stored":
                self._verify(job, lambda: _reopened(repo))
            if job.step == "verified":
                self._recheck(job, vm, files)
                self.journal.step(job, "deleting", self.clock())
        except Exception as e:  # before any delete, any failure rolls back
            failure = self._failure(e)
            self._roll_back(job, vm, files, open_repo, failure)
            raise failure from None
        try:
            if job.step == "deleting":
                self._delete(job, vm, files)
            if job.step == "deleted":
                return self._stub(job, vm, files, repo)
        except Exception as e:
            # Past the point of no return: the verified archive holds the VM; the next run
            # goes on from the journal. The VM is whole in the archive.
            self.journal.set_life(
                endpoint, vm.native_id, LifeState.ARCHIVING, self.clock(), _reason(e)
            )
            raise self._failure(e) from None
        raise ArchiveFailed("invalid_state", f"the archive journal is at {job.step!r}")

    def _failure(self, e: Exception) -> ArchiveFailed:
        if isinstance(e, ArchiveFailed):
            return e
        code = getattr(e, "code", None)
        if code is None and isinstance(e, OSError):
            code = "repository_full" if e.errno == errno.ENOSPC else "repository_unreachable"
            return ArchiveFailed(code, f"the archive repository: {e.strerror or e}")
        if code is None and isinstance(e, _S3_UNREACHABLE):
            return ArchiveFailed("repository_unreachable", f"the archive repository: {e}")
        return ArchiveFailed(str(code or "vault_error"), str(e))

    def _begin(self, job: Job, vm: VmInfo, files: VmFiles) -> None:
        if files.read_stub(vm) is not None:
            raise ArchiveFailed("already_archived", f"{vm.name} already has a stub")
        state = files.power_state(vm)
        if state != "off":
            raise ArchiveFailed(
                "invalid_power_state", f"{vm.name} is {state}; only a VM that is off is archived"
            )
        self.journal.set_life(job.endpoint, vm.native_id, LifeState.ARCHIVING, self.clock())
        placement = files.fence(vm)
        self.journal.step(job, "fenced", self.clock(), placement=placement)

    def _store(
        self,
        job: Job,
        vm: VmInfo,
        files: VmFiles,
        rules: ArchiveRules,
        repo: Repository,
        report: Report | None,
    ) -> None:
        if files.power_state(vm) != "off" or not files.fenced(vm):
            raise ArchiveFailed("vm_changed", f"{vm.name} was started or unfenced; not archived")
        own, external = files.files(vm)
        chosen = [f for f in own if f.role in rules.roles]
        roles = {f.role for f in chosen}
        if FileRole.CONFIG not in roles or FileRole.DISK not in roles:
            raise ArchiveFailed(
                "nothing_to_restore",
                f"{vm.name}: no configuration or no disk among its files; not archived",
            )
        hardware = files.hardware(vm)
        meter = _Meter(sum(f.size for f in chosen), report, f"archiving {vm.name}")
        read: dict[str, ReadAhead] = {}
        manifest_box: list[Manifest] = []

        def opener(f: VmFile) -> Callable[[], Any]:
            @contextmanager
            def open_() -> Iterator[BinaryIO]:
                with files.reader(f) as stream, ReadAhead(stream) as ahead:
                    read[f.name] = ahead
                    counted = _Counted(read[f.name], meter, lambda: self._crash("archive_mid_read"))
                    yield io.BufferedReader(counted, 1 << 20)

            return open_

        def sources() -> Iterator[Source]:
            for f in chosen:
                yield Source(f.name, opener(f), f.size)
            # One lane (`lanes=1`): the vault reads each source before it asks for the next,
            # so every hash is known here.
            manifest = Manifest(
                vm.native_id,
                vm.name,
                files.hypervisor,
                "off",
                self.clock().isoformat(),
                {
                    **hardware,
                    "external": [asdict(x) for x in external],
                    "placement": job.placement or {},
                },
                tuple(
                    ArchivedFile(
                        f.name,
                        f.source,
                        f.role.value,
                        read[f.name].size,
                        read[f.name].hash.hexdigest(),
                        f.modified,
                    )
                    for f in chosen
                ),
            )
            for got in manifest.files:
                listed = next(c for c in chosen if c.name == got.name)
                if got.size != listed.size:
                    raise ArchiveFailed(
                        "vm_changed",
                        f"{got.name} was {listed.size} bytes when listed, {got.size} when read",
                    )
            manifest_box.append(manifest)
            body = manifest.to_bytes()
            yield Source(MANIFEST_NAME, lambda: _opened(body), len(body))

        snapshot, stats = repo.store(
            sources(),
            name=f"vm-archive {vm.name}",
            tags=["vm-archive"],
            meta={"vm": vm.native_id, "endpoint": job.endpoint, "kind": "vm-archive"},
            source=f"vm-archive/{job.endpoint}/{vm.native_id}",
            rescan=True,
            lanes=1,  # the manifest is made from every file's hash: each read before it
        )
        meter.tell()
        repo.pin(snapshot.id, f"archive of {vm.name} ({job.endpoint}/{vm.native_id})")
        self.journal.step(
            job,
            "stored",
            self.clock(),
            snapshot=snapshot.id,
            manifest=manifest_box[0],
            stored_bytes=stats.new_bytes_stored,
        )
        self._crash("archive_after_store")

    def _verify(self, job: Job, open_repo: OpenRepository) -> None:
        assert job.snapshot
        assert job.manifest
        fresh = open_repo()  # a new handle: what the storage holds, not this run's memory
        verify_readback(fresh, job.snapshot, job.manifest.files)
        sink = io.BytesIO()
        fresh.restore_stream(job.snapshot, MANIFEST_NAME, sink)
        if sink.getvalue() != job.manifest.to_bytes():
            raise ArchiveMismatch("the manifest read back differs; nothing is deleted")
        self.journal.step(job, "verified", self.clock())
        self._crash("archive_after_verify")

    def _recheck(self, job: Job, vm: VmInfo, files: VmFiles) -> None:
        """Just before the first delete: still off, still fenced, no file changed, none
        added. Anything else and nothing is deleted."""
        assert job.manifest
        state = files.power_state(vm)
        if state != "off" or not files.fenced(vm):
            raise ArchiveFailed(
                "vm_changed", f"{vm.name} is {state} or was unfenced since it was read"
            )
        for f in job.manifest.files:
            now = files.stat(_vm_file(f))
            if now is None or now[0] != f.size or (f.modified and now[1] != f.modified):
                raise ArchiveFailed(
                    "vm_changed", f"{f.name} changed since it was read; nothing is deleted"
                )
        own, _ = files.files(vm)
        archived = {f.name for f in job.manifest.files}
        roles = {r.value for r in FileRole} - {FileRole.LOG.value, FileRole.OTHER.value}
        added = [f.name for f in own if f.name not in archived and f.role.value in roles]
        if added:
            raise ArchiveFailed(
                "vm_changed",
                f"{vm.name} has files it did not have when read ({', '.join(added)})",
            )

    def _delete(self, job: Job, vm: VmInfo, files: VmFiles) -> None:
        assert job.manifest
        done = list(job.done)
        for f in job.manifest.files:
            if f.name in done:
                continue
            files.delete(_vm_file(f))
            done.append(f.name)
            self.journal.step(job, "deleting", self.clock(), done=done)
            self._crash("archive_mid_delete")
        self.journal.step(job, "deleted", self.clock())

    def _stub(self, job: Job, vm: VmInfo, files: VmFiles, repo: Repository) -> ArchiveRecord:
        assert job.manifest
        assert job.snapshot
        now = self.clock()
        stub = Stub(
            vm_id=vm.native_id,
            vm_name=vm.name,
            hypervisor=files.hypervisor,
            repository=repo.id,
            location=_location(repo),
            snapshot=job.snapshot,
            manifest_sha256=job.manifest.sha256(),
            archived_at=now.isoformat(),
            files=len(job.manifest.files),
            size=sum(f.size for f in job.manifest.files),
        ).signed(stub_key(repo.keys.master))
        files.write_stub(vm, stub.dumps())
        self._crash("archive_after_stub")
        files.mark(vm, f"archived {now:%Y-%m-%d %H:%M} UTC, snapshot {job.snapshot[:12]}")
        before = self.journal.life(job.endpoint, vm.native_id)
        restores = before[2].restore_count if before and before[2] else 0
        record = ArchiveRecord(
            archived_at=now,
            snapshot=job.snapshot,
            repository=repo.id,
            size_before=stub.size,
            stored_bytes=job.stored_bytes,
            restore_count=restores,
        )
        self.journal.set_life(job.endpoint, vm.native_id, LifeState.ARCHIVED, now, None, record)
        self.journal.end(job)
        return record

    def _roll_back(
        self,
        job: Job,
        vm: VmInfo,
        files: VmFiles,
        open_repo: OpenRepository,
        error: Exception,
    ) -> None:
        """Before any delete: the VM goes back as it was, the archive is let go. A fence
        that cannot be lifted now (the endpoint is what failed) stays journalled at
        `unfencing`, for `settle` to lift when the endpoint answers again."""
        stuck: DriverError | None = None
        if job.step != "begun" or (isinstance(error, ArchiveFailed) and error.code == "vm_changed"):
            try:
                files.unfence(vm, job.placement)
            except DriverError as e:  # the failure is reported; fenced is safe
                stuck = e
        state = LifeState.ARCHIVE_FAILED
        if isinstance(error, ArchiveFailed) and error.code in ("already_archived", "busy"):
            state = LifeState.ARCHIVED if error.code == "already_archived" else LifeState.OFF
        let_go(self.journal, job, open_repo, error, stuck, state, self.clock())

    def unsettled(self) -> list[Job]:
        """Roll backs that still owe a VM its fence lifted."""
        return [j for j in self.journal.jobs() if j.kind == "archive" and j.step == "unfencing"]

    def settle(self, vm: VmInfo, files: VmFiles, job: Job) -> None:
        """Lift the fence a roll back could not; a DriverError means not yet."""
        with self.exclusive(job.endpoint, vm.native_id, "archive"):
            fresh = self.journal.job(job.endpoint, vm.native_id)
            if fresh is not None and fresh.step == "unfencing":
                self._settle(fresh, vm, files)

    def _settle(self, job: Job, vm: VmInfo, files: VmFiles) -> None:
        try:
            files.unfence(vm, job.placement)
        except DriverError as e:
            raise ArchiveFailed(
                "endpoint_unreachable",
                f"{vm.name} is still kept from powering on after a failed archive and its "
                f"endpoint does not answer yet: {e}",
            ) from None
        self.journal.end(job)

    # --- restore -----------------------------------------------------------------------

    def restore(
        self,
        endpoint: str,
        vm: VmInfo,
        files: VmFiles,
        open_repo: OpenRepository,
        report: Report | None = None,
        requested_by: str | None = None,
        place: str | None = None,
        rule: RestorePlace = RestorePlace.WHEN_FULL,
    ) -> Manifest:
        """Write the VM's files back, re-register it and compare it with the manifest;
        then the stub goes. Post-restore actions are the caller's (they need the policy).
        `place` names another datastore for the disks; `rule` says whether they may go
        to one (asked, or when their own is full)."""
        with self.exclusive(endpoint, vm.native_id, "restore"):
            return self._restore(endpoint, vm, files, open_repo, report, requested_by, place, rule)

    def _restore(
        self,
        endpoint: str,
        vm: VmInfo,
        files: VmFiles,
        open_repo: OpenRepository,
        report: Report | None,
        requested_by: str | None,
        place: str | None,
        rule: RestorePlace,
    ) -> Manifest:
        job = self.journal.claim(endpoint, vm.native_id, "restore", self.clock(), requested_by)
        written: list[VmFile] = []
        try:
            repo = open_repo()
            if job.step in ("begun", "writing"):
                stub, manifest = self._open_stub(vm, files, repo)
                self.journal.set_life(endpoint, vm.native_id, LifeState.RESTORING, self.clock())
                if job.step == "begun":
                    relocated = self._plan(vm, manifest, files, place, rule)
                    self.journal.step(
                        job,
                        "writing",
                        self.clock(),
                        snapshot=stub.snapshot,
                        manifest=manifest,
                        relocated=relocated,
                    )
                self._write_back(job, manifest, stub.snapshot, files, repo, report, written)
            assert job.manifest is not None
            manifest = job.manifest
            if job.step == "written":
                files.unfence(vm, _placement(manifest))
                if job.relocated:
                    files.repoint(
                        vm,
                        _moves(manifest, job.relocated),
                        lambda: self._crash(REPOINT_POINT),
                    )
                self.journal.step(job, "registered", self.clock())
                self._crash("restore_after_register")
            if job.step == "registered":
                self._compare(vm, files, manifest, job.relocated or {})
                files.mark(vm, None)
                self.journal.step(job, "compared", self.clock())
        except Exception as e:  # the stub still stands: any failure undoes
            failure = self._failure(e)
            self._undo_restore(job, vm, files, written, failure)
            raise failure from None
        # The point of no return: the VM is back, whole and compared; the stub goes last
        # (removing one that is already gone, after a crash here, is no error).
        files.remove_stub(vm)
        # Someone asked for this VM back: its first period starts again now, not from the
        # days it spent off and archived, which would find it idle at once.
        self.journal.store.set_quiet_from(endpoint, vm.native_id, self.clock())
        life = self.journal.life(endpoint, vm.native_id)
        record = life[2] if life else None
        if record is not None:
            record = record.model_copy(
                update={"restore_count": record.restore_count + 1, "restored_at": self.clock()}
            )
        self.journal.set_life(endpoint, vm.native_id, LifeState.OFF, self.clock(), None, record)
        self.journal.end(job)
        return manifest

    def _undo_restore(
        self, job: Job, vm: VmInfo, files: VmFiles, written: list[VmFile], error: Exception
    ) -> None:
        """The stub is still there and the archive is the VM: fence it again and remove
        the copies written so far (this run's and a crashed run's), so the datastore's
        room is not spent on a half-restored VM."""
        if job.relocated and job.manifest and job.step in ("written", "registered"):
            back = {new: old for old, new in _moves(job.manifest, job.relocated).items()}
            with contextlib.suppress(DriverError):  # the disks' old paths, as archived
                files.repoint(vm, back)
        with contextlib.suppress(DriverError):
            files.fence(vm)
        names = {f.name for f in written} | set(job.done)
        archived = job.manifest.files if job.manifest else ()
        for f in written + [_vm_file(a, job.relocated) for a in archived]:
            if f.name in names:
                names.discard(f.name)
                with contextlib.suppress(DriverError):  # copies of what the archive holds
                    files.delete(f)
        self.journal.set_life(
            job.endpoint, vm.native_id, LifeState.RESTORE_FAILED, self.clock(), _reason(error)
        )
        self.journal.end(job)

    def _open_stub(self, vm: VmInfo, files: VmFiles, repo: Repository) -> tuple[Stub, Manifest]:
        raw = files.read_stub(vm)
        if raw is None:
            raise ArchiveFailed("not_archived", f"{vm.name} has no stub: it is not archived")
        stub = Stub.loads(raw)
        stub.verify(stub_key(repo.keys.master), repo.id)
        try:
            repo.snapshot(stub.snapshot)
        except VaultError:
            raise StubOrphaned(
                f"the stub names snapshot {stub.snapshot[:12]}, which the repository no "
                "longer holds (pruned or deleted); the VM cannot be restored from it"
            ) from None
        sink = io.BytesIO()
        try:
            repo.restore_stream(stub.snapshot, MANIFEST_NAME, sink)
        except VaultError as e:
            raise ArchiveFailed("archive_damaged", f"the archive's manifest: {e}") from None
        if hashlib.sha256(sink.getvalue()).hexdigest() != stub.manifest_sha256:
            raise StubTampered("the archive's manifest does not match the stub's hash")
        return stub, Manifest.from_bytes(sink.getvalue())

    def _plan(
        self,
        vm: VmInfo,
        manifest: Manifest,
        files: VmFiles,
        place: str | None,
        rule: RestorePlace,
    ) -> dict[str, str]:
        """Where each file goes back: its own place, or (asked for, or its own full, and
        the policy allowing) the VM's disks to another datastore of its host with room.
        Journalled before the first write, so a resumed restore writes where this one did
        and an undone one removes what it wrote."""
        short = self._shortfalls(manifest, files, {})
        if place is None and not short:
            self._check_externals(manifest, files)
            return {}
        if rule == RestorePlace.ORIGINAL:
            if place is not None:
                raise ArchiveFailed(
                    "refused_by_policy",
                    "the policy restores VMs only to their own datastore (archive.restore_to "
                    "is original); nothing was written",
                )
            raise _full(short[0])
        if any(FileRole(f.role) == FileRole.SNAPSHOT for f in manifest.files):
            raise ArchiveFailed(
                "not_supported",
                f"{vm.name} has snapshots, whose chain names its disks where they were: it is "
                "restored only to its own datastore" + (f" ({_say(short[0])})" if short else ""),
            )
        disks = [
            f
            for f in manifest.files
            if FileRole(f.role) == FileRole.DISK and not f.name.startswith("external/")
        ]
        moving = sum(f.size for f in disks)
        try:
            room = files.places(vm)
        except DriverError as e:
            if e.code != "not_supported":
                raise
            raise ArchiveFailed(
                "not_supported", str(e) + (f"; {_say(short[0])}" if short else "")
            ) from None
        if not room:
            raise ArchiveFailed(
                "datastore_not_found" if place else "datastore_full",
                f"{vm.name}'s host has no other datastore or storage pool to restore to"
                + (f"; {_say(short[0])}" if short else ""),
            )
        if place is None:
            full = {key for key, _, _ in short}
            fits = sorted(
                (free, name) for name, free in room.items() if free >= moving and name not in full
            )
            if not fits:
                raise ArchiveFailed(
                    "datastore_full",
                    f"{_say(short[0])}, and no other datastore of its host has "
                    f"{_size(moving)} free for its disks; nothing was written",
                )
            place = fits[-1][1]
        elif place not in room:
            raise ArchiveFailed(
                "datastore_not_found",
                f"{place} is no datastore {vm.name}'s host can use (it can use "
                f"{', '.join(sorted(room))}); nothing was written",
            )
        relocated = {}
        for f in disks:
            moved = files.relocate(_vm_file(f), place)
            if moved.source != f.source:
                relocated[f.name] = moved.source
        short = self._shortfalls(manifest, files, relocated)
        if short:
            raise _full(short[0])
        self._check_externals(manifest, files)
        return relocated

    def _shortfalls(
        self, manifest: Manifest, files: VmFiles, relocated: dict[str, str]
    ) -> list[tuple[str, int, int]]:
        """Each place the files go that lacks room: (place, free, needed)."""
        need: dict[str, int] = {}
        places: dict[str, VmFile] = {}
        for f in manifest.files:
            vf = _vm_file(f, relocated)
            key = (
                vf.source[1:].split("]", 1)[0]
                if vf.source.startswith("[")
                else str(Path(vf.source).parent)
            )
            need[key] = need.get(key, 0) + f.size
            places.setdefault(key, vf)
        out = []
        for key, size in need.items():
            free = files.free_bytes(places[key])
            if free is not None and free < size:
                out.append((key, free, size))
        return out

    def _check_externals(self, manifest: Manifest, files: VmFiles) -> None:
        for x in manifest.hardware.get("external", []):
            ext = ExternalFile(**x)
            if files.stat(VmFile("", ext.source, FileRole.DISK, ext.size)) is None:
                raise ArchiveFailed(
                    "backing_missing",
                    f"{ext.source} ({ext.why}) is gone; the VM's disks need it",
                )

    def _write_back(
        self,
        job: Job,
        manifest: Manifest,
        snapshot: str,
        files: VmFiles,
        repo: Repository,
        report: Report | None,
        written: list[VmFile],
    ) -> None:
        done = list(job.done)
        meter = _Meter(sum(f.size for f in manifest.files), report, f"restoring {manifest.vm_name}")
        for f in manifest.files:
            if f.name in done:
                meter.add(f.size)
                continue
            vf = _vm_file(f, job.relocated)
            if job.relocated and f.name in job.relocated:
                files.prepare(vf)
            sinks: list[_HashingWriter] = []

            def produce(
                out: BinaryIO, name: str = f.name, sinks: list[_HashingWriter] = sinks
            ) -> None:
                sink = _HashingWriter(out, meter, lambda: self._crash("restore_mid_write"))
                sinks.append(sink)
                repo.restore_stream(snapshot, name, sink)  # type: ignore[arg-type]

            written.append(vf)
            files.write(vf, produce)
            sink = sinks[0]
            if sink.size != f.size or sink.hash.hexdigest() != f.sha256:
                raise ArchiveMismatch(
                    f"{f.name}: {sink.size} bytes written back do not match the manifest"
                )
            done.append(f.name)
            self.journal.step(job, "writing", self.clock(), done=done)
        meter.tell()
        self.journal.step(job, "written", self.clock())
        self._crash("restore_after_write")

    def _compare(
        self, vm: VmInfo, files: VmFiles, manifest: Manifest, relocated: dict[str, str]
    ) -> None:
        now = files.hardware(vm)
        archived = {
            k: v for k, v in manifest.hardware.items() if k not in ("external", "placement")
        }
        if relocated:  # the disks were moved on purpose: expect them where they went
            moves = _moves(manifest, relocated)
            if isinstance(archived.get("disks"), list):
                archived["disks"] = sorted(
                    [moves.get(x, x) if isinstance(x, str) else x for x in d]
                    for d in archived["disks"]
                )
            if isinstance(archived.get("datastores"), list):
                went = {v[1:].split("]", 1)[0] for v in relocated.values() if v.startswith("[")}
                archived["datastores"] = sorted(set(archived["datastores"]) | went)
        differences = Manifest(
            manifest.vm_id, manifest.vm_name, manifest.hypervisor, "", "", archived
        ).differences({k: _plain(v) for k, v in now.items() if k in archived})
        if differences:
            raise ArchiveFailed(
                "hardware_mismatch",
                f"{vm.name} came back different: {'; '.join(differences)}; the stub is kept",
            )


class _Counted(io.RawIOBase):
    """A hypervisor stream as the vault reads it: counted for progress, with the
    mid-read crash point after the first MiB."""

    def __init__(self, inner: ReadAhead, meter: _Meter, crash: Callable[[], None]) -> None:
        self.inner = inner
        self.meter = meter
        self.crash = crash

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self.inner.readinto(buffer)
        self.meter.add(n)
        if self.inner.size >= 1 << 20:
            self.crash()
        return n


@contextmanager
def _opened(body: bytes) -> Iterator[BinaryIO]:
    yield io.BytesIO(body)


def _reopened(repo: Repository) -> Repository:
    """The repository opened again from its storage (config and index read anew) with the
    master key already unlocked: a read-back that trusts nothing this process remembers,
    without a second key derivation (half a second of scrypt)."""
    return Repository(
        repo.backend, read_config(repo.backend), repo.keys.master, workers=repo.workers
    )


def let_go(
    journal: Journal,
    job: Job,
    open_repo: OpenRepository,
    error: Exception,
    stuck: DriverError | None,
    state: LifeState,
    now: datetime,
    what: str = "the VM is whole but still kept from powering on",
) -> None:
    """How every engine's roll back ends: the archive's pin released (prune may take it),
    the VM's state and reason written, and the job ended, or kept at `unfencing` when the
    fence could not be lifted (`stuck`), for `Archiver.settle` to lift later."""
    if job.snapshot:
        with contextlib.suppress(VaultError, ArchiveFailed):  # a pin left loses nothing
            open_repo().release(job.snapshot)
    reason = _reason(error)
    if stuck is not None:
        reason += f"; {what} ({stuck}): the fence is lifted when the endpoint answers again"
    journal.set_life(job.endpoint, job.native_id, state, now, reason)
    if stuck is not None:
        journal.step(job, "unfencing", now, snapshot=None)
    else:
        journal.end(job)


def _vm_file(f: ArchivedFile, relocated: dict[str, str] | None = None) -> VmFile:
    source = (relocated or {}).get(f.name, f.source)
    return VmFile(f.name, source, FileRole(f.role), f.size, f.modified)


def _moves(manifest: Manifest, relocated: dict[str, str]) -> dict[str, str]:
    """Old source -> new source of each file a restore moved."""
    return {f.source: relocated[f.name] for f in manifest.files if f.name in relocated}


def _say(short: tuple[str, int, int]) -> str:
    place, free, need = short
    return f"{place} has {_size(free)} free, the VM needs {_size(need)} there"


def _full(short: tuple[str, int, int]) -> ArchiveFailed:
    return ArchiveFailed(
        "datastore_full", f"{_say(short)}; nothing was written, the archive is untouched"
    )


def _placement(manifest: Manifest) -> dict[str, str] | None:
    value = manifest.hardware.get("placement")
    return dict(value) if isinstance(value, dict) else None


def _plain(value: Any) -> Any:
    """Values as JSON gives them back (tuples as lists), so a comparison with the
    manifest is of like with like."""
    return json.loads(json.dumps(value))


def _reason(e: Exception) -> str:
    code = getattr(e, "code", None)
    return f"{code}: {e}" if code else str(e)


def _location(repo: Repository) -> str:
    backend = repo.backend
    root = getattr(backend, "root", None)
    if root is not None:
        return str(root)
    bucket = getattr(backend, "bucket", None)
    if bucket is not None:
        return f"s3://{bucket}/{getattr(backend, 'prefix', '')}".rstrip("/")
    return "cloud"
