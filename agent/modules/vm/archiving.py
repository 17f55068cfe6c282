"""The module's archive feature: which VMs are due, where archives go, what follows a restore.

`archive.py` knows the steps; this knows the module around them. The policy's archive rules
say which VMs that were left off are due (the second period, or at once after the module's
own shutdown; never, by size, by file age, by datastore fill) and where archives go (a
directory, the tenant's bucket, or storage the cloud manages). The keys stay on this host:
the repository's passphrase file (`archive_passphrase_file` in the module's settings) or,
on a new machine, its recovery key (`archive_recovery_key_file`); S3 credentials by name
(`s3_credentials`). None of them is in a policy, so none passes through the cloud.

Archiving is a docked feature (`archive`, unlocked by the plan). Standalone the module
shuts VMs down and stops there; a VM archived while docked can still be restored
standalone (`dockyard-agent vm restore`), since that only needs the repository's key.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import httpx

from ...errors import FlowModeForbids
from ...protocol import CommandEntry
from ...protocol.vm import (
    ArchiveRecord,
    ArchiveRules,
    ArchiveStorage,
    LifeState,
    PostRestoreKind,
    StorageKind,
    VmLifecyclePolicy,
)
from ...vault.backends import Backend, LocalBackend, S3Backend
from ...vault.errors import VaultError
from ...vault.repository import Repository
from ..base import CommandFailed, Handler, ModuleContext, Outcome
from .archive import ArchiveFailed, Archiver, Report
from .drivers.base import Driver, DriverError
from .ec2archive import Ec2Archiver
from .ec2files import Ec2Files
from .lifecycle import exclusion
from .store import StoredVm, VmStore
from .vmfiles import VmFiles

FEATURE = "archive"
SIGNATURE_HEADER = "Dockyard-Signature"
TIMESTAMP_HEADER = "Dockyard-Timestamp"


class ArchiveHost(Protocol):
    """What of the module the archive feature uses (the module itself, in practice)."""

    store: VmStore
    ctx: ModuleContext
    clock: Callable[[], datetime]

    @property
    def features(self) -> frozenset[str]: ...

    def policy(self) -> VmLifecyclePolicy: ...

    def local_policy(self) -> VmLifecyclePolicy: ...

    def settings(self) -> dict[str, Any]: ...

    def update_settings(self, **values: Any) -> None: ...

    def driver(self, endpoint: str) -> Driver: ...

    def upload_inventory(self, now: datetime, full: bool = False) -> int: ...

    def discover(self, now: datetime, endpoints: list[str] | None = None) -> dict[str, str]: ...


def files_of(driver: Driver) -> VmFiles:
    """The file access for a driver's hypervisor; the others say so, by code."""
    if driver.kind == "vsphere":
        from .drivers.vsphere import VsphereDriver
        from .vmfiles.vsphere import VsphereFiles

        assert isinstance(driver, VsphereDriver)
        return VsphereFiles(driver)
    if driver.kind == "ec2":
        from .drivers.ec2 import Ec2Driver

        assert isinstance(driver, Ec2Driver)
        return Ec2Files(driver)
    if driver.kind == "libvirt":  # where the agent runs on the host (LibvirtFiles says why)
        from .drivers.libvirt import LibvirtDriver
        from .vmfiles.libvirt import LibvirtFiles

        assert isinstance(driver, LibvirtDriver)
        return LibvirtFiles(driver)
    raise DriverError("not_supported", f"archiving VMs of {driver.kind} endpoints is not built yet")


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """A webhook's signature: HMAC-SHA256 over the timestamp, a dot and the body, so a
    receiver that checks the timestamp's age refuses a replayed call."""
    return (
        "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    )


@dataclass(frozen=True)
class Due:
    vm: StoredVm
    why: str


class ArchiveService:
    def __init__(self, host: ArchiveHost) -> None:
        self.host = host
        self.archiver = Archiver(host.store, host.ctx.state_dir, host.clock)
        self.ec2 = Ec2Archiver(self.archiver)

    # --- the repository ----------------------------------------------------------------

    def backend(self, storage: ArchiveStorage) -> Backend:
        if storage.kind == StorageKind.DIRECTORY:
            assert storage.path is not None
            return LocalBackend(Path(storage.path))
        if storage.kind == StorageKind.S3:
            assert storage.bucket is not None
            creds = (self.host.settings().get("s3_credentials") or {}).get(
                storage.credentials or "", {}
            )
            if storage.credentials and not creds:
                raise ArchiveFailed(
                    "no_storage",
                    f"the policy names S3 credentials {storage.credentials!r}, which this "
                    "agent's settings do not hold (`dockyard-agent vm settings`)",
                )
            return S3Backend(
                storage.bucket,
                storage.prefix,
                endpoint_url=storage.endpoint_url,
                region=creds.get("region"),
                access_key=creds.get("access_key"),
                secret_key=creds.get("secret_key"),
            )
        try:
            return self.host.ctx.vault("vm-archive")
        except FlowModeForbids as e:
            raise ArchiveFailed("no_storage", f"cloud storage: {e}") from None

    def opener(self, storage: ArchiveStorage | None) -> Callable[[], Repository]:
        if storage is None:
            raise ArchiveFailed(
                "no_storage", "the vm-lifecycle policy names no archive storage (archive.storage)"
            )
        settings = self.host.settings()
        passphrase_file = settings.get("archive_passphrase_file")
        recovery_file = settings.get("archive_recovery_key_file")
        if not passphrase_file and not recovery_file:
            raise ArchiveFailed(
                "no_storage",
                "no key for the archive repository: `dockyard-agent vm archive-key "
                "--passphrase-file F` (or, on a new machine, --recovery-key-file F); the "
                "setting is archive_passphrase_file",
            )
        backend = self.backend(storage)

        def open_repo() -> Repository:
            try:
                if passphrase_file:
                    secret = Path(passphrase_file).read_text().strip()
                    return Repository.open(backend, passphrase=secret)
                key = Path(str(recovery_file)).read_text().strip()
                return Repository.open(backend, recovery_key=key)
            except OSError as e:
                raise ArchiveFailed("no_storage", f"the repository's key file: {e}") from None
            except VaultError as e:
                raise ArchiveFailed(
                    "no_storage", f"the archive repository at {backend.describe()}: {e}"
                ) from None

        return open_repo

    # --- archive -----------------------------------------------------------------------

    def _vm(self, endpoint: str, native_id: str) -> StoredVm:
        stored = self.host.store.vm(endpoint, native_id)
        if stored is None or stored.gone_at is not None:
            raise ArchiveFailed("vm_not_found", f"{endpoint}/{native_id} is not in the inventory")
        if not self.host.local_policy().covers(endpoint):
            raise ArchiveFailed(
                "refused_by_safety_net", f"{endpoint} is outside this agent's local scope"
            )
        return stored

    def archive(self, endpoint: str, native_id: str, report: Report | None = None) -> ArchiveRecord:
        if FEATURE not in self.host.features:
            raise ArchiveFailed(
                "feature_locked", "archiving is a docked feature: dock with a plan that has it"
            )
        policy = self.host.policy()
        stored = self._vm(endpoint, native_id)
        why_not = exclusion(stored, policy, self.host.store.never_act())
        if why_not:
            raise ArchiveFailed("refused_by_safety_net", f"{stored.vm.name} {why_not}")
        open_repo = self.opener(policy.archive.storage)
        files = files_of(self.host.driver(endpoint))
        try:
            self._check_size(stored, files, policy.archive)
            engine = self.ec2 if isinstance(files, Ec2Files) else self.archiver
            return engine.archive(endpoint, stored.vm, files, policy.archive, open_repo, report)
        finally:
            files.close()

    def _check_size(self, stored: StoredVm, files: VmFiles, rules: ArchiveRules) -> None:
        own, _ = files.files(stored.vm)
        size_gb = sum(f.size for f in own) / 1e9
        if rules.min_vm_gb is not None and size_gb < rules.min_vm_gb:
            raise ArchiveFailed(
                "refused_by_safety_net",
                f"{stored.vm.name} takes {size_gb:.1f} GB, under the rule's {rules.min_vm_gb} GB",
            )
        if rules.max_vm_gb is not None and size_gb > rules.max_vm_gb:
            raise ArchiveFailed(
                "refused_by_safety_net",
                f"{stored.vm.name} takes {size_gb:.1f} GB, over the rule's {rules.max_vm_gb} GB",
            )
        if rules.min_file_age_days:
            cutoff = self.host.clock() - timedelta(days=rules.min_file_age_days)
            recent = [
                f.name for f in own if f.modified and datetime.fromisoformat(f.modified) > cutoff
            ]
            if recent:
                raise ArchiveFailed(
                    "refused_by_safety_net",
                    f"{', '.join(recent[:3])} changed within {rules.min_file_age_days} days",
                )

    def due(self, now: datetime) -> list[Due]:
        """VMs the archive rules make due now (the worker archives them one by one)."""
        if FEATURE not in self.host.features:
            return []
        policy = self.host.policy()
        rules = policy.archive
        if rules.never or rules.storage is None:
            return []
        lives = self.archiver.journal.lives()
        busy = {(j.endpoint, j.native_id) for j in self.archiver.journal.jobs()}
        never_act = self.host.store.never_act()
        shut_by_us = self._shut_by_module()
        out = []
        for stored in self.host.store.vms():
            key = (stored.endpoint, stored.vm.native_id)
            if stored.gone_at or stored.vm.power_state != "off" or stored.off_since is None:
                continue
            if not self.host.local_policy().covers(stored.endpoint) or not policy.covers(
                stored.endpoint
            ):
                continue
            life = lives.get(key)
            if key in busy or (life and life[0] not in (LifeState.OFF, LifeState.RUNNING)):
                continue  # archived, failed (waits for a person), or mid-job
            if exclusion(stored, policy, never_act):
                continue
            off_for = now - stored.off_since
            if rules.at_once and key in shut_by_us:
                why = "shut down by this module; the rules archive at once"
            elif off_for >= timedelta(days=policy.off_days):
                why = f"off for {off_for.days} days (the second period is {policy.off_days})"
            else:
                continue
            if rules.datastore_used_percent is not None and not self._datastore_full(
                stored, rules.datastore_used_percent
            ):
                continue
            out.append(Due(stored, why))
        return out

    def _shut_by_module(self) -> set[tuple[str, str]]:
        with self.host.store.tx() as db:
            rows = db.execute("SELECT DISTINCT endpoint, native_id FROM actions").fetchall()
        return {(e, n) for e, n in rows}

    def _datastore_full(self, stored: StoredVm, percent: float) -> bool:
        for ds in self.host.store.datastores(stored.endpoint):
            if ds.name in stored.vm.datastores and ds.capacity_bytes > 0:
                used = 100.0 * (ds.capacity_bytes - ds.free_bytes) / ds.capacity_bytes
                if used >= percent:
                    return True
        return False

    # --- restore -----------------------------------------------------------------------

    def restore(
        self,
        endpoint: str,
        native_id: str,
        report: Report | None = None,
        requested_by: str | None = None,
        recovery_key_file: Path | None = None,
        datastore: str | None = None,
    ) -> list[str]:
        """Restore, then the policy's post-restore actions; what each did, as sentences."""
        policy = self.host.policy()
        stored = self._vm(endpoint, native_id)
        if recovery_key_file is not None:
            self.host.update_settings(archive_recovery_key_file=str(recovery_key_file.resolve()))
        open_repo = self.opener(policy.archive.storage)
        files = files_of(self.host.driver(endpoint))
        try:
            if isinstance(files, Ec2Files):  # EC2 launches it again under a new id
                if datastore:
                    raise ArchiveFailed(
                        "not_supported",
                        "an EC2 instance comes back where its AMI's snapshots are; it has no "
                        "datastore to choose",
                    )
                on = any(a.kind == PostRestoreKind.POWER_ON for a in policy.archive.post_restore)
                vm = self.ec2.restore(
                    endpoint, stored.vm, files, open_repo, report, requested_by, leave_on=on
                )
                stored = replace(stored, vm=vm)
            else:
                self.archiver.restore(
                    endpoint,
                    stored.vm,
                    files,
                    open_repo,
                    report,
                    requested_by,
                    datastore,
                    policy.archive.restore_to,
                )
            return self._after(stored, files, policy.archive, requested_by)
        finally:
            files.close()

    def _after(
        self, stored: StoredVm, files: VmFiles, rules: ArchiveRules, requested_by: str | None
    ) -> list[str]:
        done = []
        for action in rules.post_restore:
            if action.kind == PostRestoreKind.POWER_ON:
                files.power_on(stored.vm)
                self.archiver.journal.set_life(
                    stored.endpoint, stored.vm.native_id, LifeState.RUNNING, self.host.clock()
                )
                done.append("powered on")
            elif action.kind == PostRestoreKind.WAIT_HEARTBEAT:
                deadline = time.monotonic() + action.timeout_s
                while files.heartbeat(stored.vm) is False and time.monotonic() < deadline:
                    time.sleep(1.0)
                beat = files.heartbeat(stored.vm)
                done.append(
                    "no heartbeat on this hypervisor"
                    if beat is None
                    else ("heartbeat" if beat else f"no heartbeat after {action.timeout_s} s")
                )
            else:
                assert action.url is not None
                done.append(self._webhook(action.url, stored, requested_by, action.timeout_s))
        return done

    def webhook_secret(self) -> bytes:
        settings = self.host.settings()
        secret = settings.get("webhook_secret")
        if not secret:
            secret = secrets.token_hex(32)
            self.host.update_settings(webhook_secret=secret)
        return bytes.fromhex(str(secret))

    def _webhook(self, url: str, stored: StoredVm, requested_by: str | None, timeout_s: int) -> str:
        body = json.dumps(
            {
                "event": "vm.restored",
                "endpoint": stored.endpoint,
                "native_id": stored.vm.native_id,
                "vm": stored.vm.name,
                "requested_by": requested_by,
                "at": self.host.clock().isoformat(),
            },
            sort_keys=True,
        ).encode()
        stamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: stamp,
            SIGNATURE_HEADER: signature(self.webhook_secret(), stamp, body),
        }
        try:
            answer = httpx.post(url, content=body, headers=headers, timeout=min(timeout_s, 30))
        except httpx.HTTPError as e:
            return f"webhook not delivered ({type(e).__name__})"  # the restore stands
        return f"webhook answered {answer.status_code}"

    # --- commands and the worker ---------------------------------------------------------

    def handlers(self) -> dict[str, Handler]:
        return {"vm.archive": self.cmd_archive, "vm.restore": self.cmd_restore}

    def _target(self, command: CommandEntry) -> tuple[str, str]:
        try:
            return str(command.args["endpoint"]), str(command.args["native_id"])
        except KeyError:
            raise CommandFailed(
                "bad_args", f"{command.name} needs endpoint and native_id"
            ) from None

    def _reporter(self, command: CommandEntry) -> Report:
        return lambda fraction, detail: self.host.ctx.progress(command.job_id, fraction, detail)

    def cmd_archive(self, command: CommandEntry) -> Outcome:
        endpoint, native_id = self._target(command)
        try:
            record = self.archive(endpoint, native_id, self._reporter(command))
        except ArchiveFailed as e:
            raise CommandFailed(e.code, str(e)) from None
        finally:
            self._tell_cloud([endpoint])
        return Outcome(
            counts={"vms": 1},
            detail=f"{endpoint}/{native_id} archived: {record.size_before} bytes, "
            f"{record.stored_bytes} stored, snapshot {record.snapshot[:12]}",
        )

    def cmd_restore(self, command: CommandEntry) -> Outcome:
        endpoint, native_id = self._target(command)
        datastore = command.args.get("datastore")
        by = command.args.get("requested_by")
        try:
            done = self.restore(
                endpoint,
                native_id,
                self._reporter(command),
                str(by) if by else None,
                datastore=str(datastore) if datastore else None,
            )
        except ArchiveFailed as e:
            raise CommandFailed(e.code, str(e)) from None
        finally:
            self._tell_cloud([endpoint])
        return Outcome(
            counts={"vms": 1},
            detail=f"{endpoint}/{native_id} restored" + (f": {', '.join(done)}" if done else ""),
        )

    def reconcile(self, command: CommandEntry) -> bool | None:
        """After a crash mid-command: the journal knows. A finished job happened; one
        still in the journal runs again and goes on from its last step."""
        if command.name not in ("vm.archive", "vm.restore"):
            return None
        endpoint, native_id = self._target(command)
        if self.archiver.journal.job(endpoint, native_id) is not None:
            return False
        life = self.archiver.journal.life(endpoint, native_id)
        finished = (
            {LifeState.ARCHIVED}
            if command.name == "vm.archive"
            else {LifeState.RUNNING, LifeState.OFF}
        )
        return life is not None and life[0] in finished

    def run_due(self, now: datetime, limit: int = 1) -> list[str]:
        """The worker's round: archive up to `limit` due VMs, one after the other; a
        failure is the VM's state (archive_failed, with its reason), waiting for a person."""
        settled = self.settle()
        out, touched = [line for _, line in settled], {e for e, _ in settled}
        for due in self.due(now)[:limit]:
            vm = due.vm
            touched.add(vm.endpoint)
            try:
                record = self.archive(vm.endpoint, vm.vm.native_id)
                out.append(f"{vm.vm.name}: archived ({due.why}), {record.stored_bytes} B stored")
            except ArchiveFailed as e:
                out.append(f"{vm.vm.name}: not archived: {e.code}")
        if out:
            self._tell_cloud(sorted(touched))
        return out

    def settle(self) -> list[tuple[str, str]]:
        """Lift the fences failed archives left on VMs whose endpoint did not answer then;
        (endpoint, what happened) for each."""
        out = []
        for job in self.archiver.unsettled():
            stored = self.host.store.vm(job.endpoint, job.native_id)
            if stored is None:
                continue
            try:
                files = files_of(self.host.driver(job.endpoint))
                try:
                    self.archiver.settle(stored.vm, files, job)
                finally:
                    files.close()
            except (ArchiveFailed, DriverError) as e:
                out.append((job.endpoint, f"{stored.vm.name}: still fenced: {e}"))
                continue
            out.append((job.endpoint, f"{stored.vm.name}: the failed archive's fence is lifted"))
        return out

    def _tell_cloud(self, endpoints: list[str]) -> None:
        """The VMs' new states go up at once: read again from their hypervisors (a restored
        VM is on, its files back), not left for the next discovery."""
        now = self.host.clock()
        self.host.discover(now, endpoints)
        with contextlib.suppress(FlowModeForbids):  # standalone, or a mode that keeps it here
            self.host.upload_inventory(now)
