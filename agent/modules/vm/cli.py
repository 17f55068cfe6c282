"""`dockyard-agent vm ...`: the VM module from a shell, standalone or beside a docked agent.

Every command works on the module's own files in the agent's state directory, so it shows
what the running agent sees; `explain` answers "why is (or isn't) this VM idle?".
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ...clock import Skew
from ...clock import from_env as clock_from_env
from ...commandline import emit, table
from ...errors import EXIT_FAILED, EXIT_UNREACHABLE
from ...protocol.links import BadLink
from ...protocol.vm import PowerAction
from .drivers.base import DriverError
from .life import LifeBook


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """`vm` and its commands. Each names its handler (`vm_run`, called with the module) and
    whether it only looks (`vm_read_only`: it must not create the module's state)."""
    vm: argparse.ArgumentParser = sub.add_parser(
        "vm", help="the VM life cycle module", allow_abbrev=False
    )
    vm.set_defaults(vm_read_only=False)
    cmds = vm.add_subparsers(dest="vm_command", required=True)

    ep = cmds.add_parser("endpoint", help="add, list or remove hypervisor endpoints")
    ep_cmds = ep.add_subparsers(dest="endpoint_command", required=True)
    add = ep_cmds.add_parser("add", help="add or replace an endpoint")
    add.add_argument("name")
    add.add_argument("--kind", required=True, choices=["vsphere", "libvirt", "ec2"])
    add.add_argument("--host", help="vSphere: vCenter or ESXi host name")
    add.add_argument("--port", type=int, default=443)
    add.add_argument("--user")
    add.add_argument("--password-file", help="file holding the password (else none)")
    add.add_argument("--insecure", action="store_true", help="vSphere: skip TLS verification")
    add.add_argument(
        "--libvirt-host",
        action="append",
        default=[],
        metavar="NAME=URI",
        help="libvirt: one host of the endpoint (repeat)",
    )
    add.add_argument("--region", help="EC2: the region")
    add.add_argument("--endpoint-url", help="EC2: another endpoint than AWS's")
    add.set_defaults(vm_run=_endpoint_add)
    ep_list = ep_cmds.add_parser("list", help="the configured endpoints (without secrets)")
    ep_list.set_defaults(vm_run=_endpoint_list, vm_read_only=True)
    rm = ep_cmds.add_parser("remove", help="forget an endpoint")
    rm.add_argument("name")
    rm.set_defaults(vm_run=_endpoint_remove)

    cmds.add_parser("discover", help="read every endpoint now").set_defaults(vm_run=_discover)
    ls = cmds.add_parser("ls", help="the VMs last discovered")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(vm_run=_ls, vm_read_only=True)
    collect = cmds.add_parser("collect", help="take one sample of every powered-on VM now")
    collect.set_defaults(vm_run=_collect)
    run = cmds.add_parser("run", help="evaluate, give notices and act on what is due, now")
    run.set_defaults(vm_run=_run_lifecycle)
    ex = cmds.add_parser("explain", help="why a VM is or is not idle")
    ex.add_argument("vm", help="name, native id, or endpoint/native-id")
    ex.add_argument("--json", action="store_true")
    ex.set_defaults(vm_run=_explain, vm_read_only=True)

    pol = cmds.add_parser("policy", help="the local vm-lifecycle policy (standalone)")
    pol_cmds = pol.add_subparsers(dest="policy_command", required=True)
    pset = pol_cmds.add_parser("set", help="validate and store a policy document (JSON)")
    pset.add_argument("file", type=Path)
    pset.set_defaults(vm_run=_policy_set)
    pshow = pol_cmds.add_parser("show", help="the policy in force")
    pshow.set_defaults(vm_run=_policy_show, vm_read_only=True)

    na = cmds.add_parser("never-act", help="VMs this agent never shuts down, whatever asks")
    na_cmds = na.add_subparsers(dest="never_command", required=True)
    na_add = na_cmds.add_parser("add")
    na_add.add_argument("vm", help="endpoint/native-id, endpoint/name, or */name")
    na_add.add_argument("--reason", required=True)
    na_add.set_defaults(vm_run=_never_act_add)
    na_rm = na_cmds.add_parser("remove")
    na_rm.add_argument("vm")
    na_rm.set_defaults(vm_run=_never_act_remove)
    na_cmds.add_parser("list").set_defaults(vm_run=_never_act_list, vm_read_only=True)

    pw = cmds.add_parser("power", help="power a VM on or off now (the safety net applies)")
    pw.add_argument("vm")
    pw.add_argument("action", choices=[a.value for a in PowerAction])
    pw.set_defaults(vm_run=_power)

    cr = cmds.add_parser("create", help="create a VM where the placement policy says")
    cr.add_argument("--endpoint", required=True)
    cr.add_argument("--name", required=True)
    cr.add_argument("--cpus", type=int, default=1)
    cr.add_argument("--memory-mb", type=int, default=1024)
    cr.add_argument("--disk-gb", type=int, action="append", default=[])
    cr.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE")
    cr.set_defaults(vm_run=_create)

    ap = cmds.add_parser("approve", help="let N more actions go past the budget")
    ap.add_argument("count", type=int)
    ap.set_defaults(vm_run=_approve)
    budget = cmds.add_parser("budget", help="the budget in force: allowed, used, approvals, held")
    budget.set_defaults(vm_run=_budget, vm_read_only=True)
    au = cmds.add_parser("audit", help="refusals and approvals, newest last")
    au.add_argument("--limit", type=int, default=50)
    au.set_defaults(vm_run=_audit, vm_read_only=True)

    sm = cmds.add_parser("smtp", help="the SMTP server notices go through")
    sm.add_argument("--host", required=True)
    sm.add_argument("--port", type=int, default=25)
    sm.add_argument("--sender", required=True)
    sm.add_argument("--starttls", action="store_true")
    sm.set_defaults(vm_run=_smtp)

    lk = cmds.add_parser("links", help="where notice links point and what serves them")
    lk.add_argument("--listen", help="HOST:PORT the agent serves answers on")
    lk.add_argument("--base-url", help="the URL owners reach that address by")
    lk.set_defaults(vm_run=_links)

    rs = cmds.add_parser("restore", help="bring an archived VM back from its stub, and start it")
    rs.add_argument("vm")
    rs.add_argument(
        "--recovery-key-file",
        type=Path,
        help="open the archive with the repository's recovery key (a new machine)",
    )
    rs.add_argument(
        "--datastore",
        help="write the VM's disks to this datastore of its host instead of their own "
        "(the policy's archive.restore_to must allow it)",
    )
    rs.set_defaults(vm_run=_restore)
    key = cmds.add_parser("archive-key", help="the key file that opens the archive repository")
    which = key.add_mutually_exclusive_group(required=True)
    which.add_argument("--passphrase-file", type=Path)
    which.add_argument("--recovery-key-file", type=Path)
    key.set_defaults(vm_run=_archive_key)
    arc = cmds.add_parser("archived", help="archived VMs: when, size before, bytes stored")
    arc.add_argument("--json", action="store_true")
    arc.set_defaults(vm_run=_archived, vm_read_only=True)

    an = cmds.add_parser("answer", help="answer a notice link by hand (its t= value)")
    an.add_argument("token")
    an.set_defaults(vm_run=_answer)
    return vm


def main(
    args: argparse.Namespace, state_dir: Path, docked: list[dict[str, Any]] | None = None
) -> int:
    """`docked`: the vm-lifecycle policies the cloud assigned, so the shell acts by the
    same policy as the running agent."""
    from . import module_at

    home = state_dir / "modules" / "vm"
    scratch: tempfile.TemporaryDirectory[str] | None = None
    if not home.exists() and args.vm_read_only:
        # Nothing has been stored yet: what a fresh module would show, from a folder that
        # is gone when the command ends, so looking never creates the agent's state.
        scratch = tempfile.TemporaryDirectory(prefix="dockyard-vm-")
        home = Path(scratch.name)
    agent_clock = clock_from_env()

    def cloud_time() -> datetime | None:
        now = agent_clock()
        skew = Skew.load(state_dir, now)
        return skew.cloud_now(now) if skew else None

    module = module_at(home, agent_clock, cloud_time)
    for row in docked or []:
        module.on_policy(row["kind"], row["name"], row["version"], row["document"])
    try:
        handler: Callable[[argparse.Namespace, Any], int] = args.vm_run
        return handler(args, module)
    except DriverError as e:
        print(f"dockyard-agent vm: {e}", file=sys.stderr)
        return 1
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'policy'}: {err['msg']}"
            for err in e.errors()
        )
        print(f"dockyard-agent vm: invalid policy: {problems}", file=sys.stderr)
        return 2
    except BadLink as e:
        print(f"dockyard-agent vm: {e}", file=sys.stderr)
        return 1
    finally:
        module.close()
        if scratch is not None:
            scratch.cleanup()


def _find(module: Any, text: str) -> Any:
    found = module.store.find(text)
    if not found:
        raise DriverError("vm_not_found", f"no VM {text!r} has been discovered")
    if len(found) > 1:
        where = ", ".join(f"{s.endpoint}/{s.vm.native_id}" for s in found)
        raise DriverError("ambiguous", f"{text!r} names several VMs: {where}")
    return found[0]


_FAILED = "error "
"""How `discover` begins the result of an endpoint it could not read (`error <code>: ...`)."""
_TRY_LATER = {"endpoint_unreachable", "timeout"}


def _discover(args: argparse.Namespace, module: Any) -> int:
    """What was read on standard output, one line on standard error per endpoint that could
    not be, and an exit code a timer or a script can act on: an outage that only printed a
    line would look like success. Any endpoint unread ends the command non-zero, even when
    others were read (their inventory is kept): 6, as for the cloud, when each could not be
    reached (try again later); 1 when one needs a hand (credentials refused, bad config)."""
    if not module.endpoints.all():
        print("no endpoint configured; add one with `dockyard-agent vm endpoint add`")
        return 0
    quiet = not getattr(args, "verbose", False)
    previous = module.log.level
    if quiet:  # the module's warning says again what the line below says
        module.log.setLevel(logging.ERROR)
    try:
        results = module.discover(module.clock())
    finally:
        module.log.setLevel(previous)
    codes: list[str] = []
    for name, result in results.items():
        if not result.startswith(_FAILED):
            print(f"{name}: {result}")
            continue
        code, _, message = result.removeprefix(_FAILED).partition(": ")
        codes.append(code)
        what = "could not be reached" if code in _TRY_LATER else "could not be read"
        print(f"dockyard-agent vm: endpoint {name} {what} ({code}): {message}", file=sys.stderr)
    if not codes:
        return 0
    if len(codes) < len(results):
        print(
            f"dockyard-agent vm: read {len(results) - len(codes)} of {len(results)} endpoints; "
            "the others' VMs are as last discovered",
            file=sys.stderr,
        )
    return EXIT_UNREACHABLE if set(codes) <= _TRY_LATER else EXIT_FAILED


def _ls(args: argparse.Namespace, module: Any) -> int:
    rows = module.records(module.clock())
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table(
        ["vm", "name", "power", "idle", "life", "owner", "note"],
        [
            [
                f"{r['endpoint']}/{r['native_id']}",
                r["name"],
                r["power_state"],
                r["idle_state"],
                r.get("life_state", "running"),
                r.get("owner"),
                "possible clone of " + ", ".join(r["possible_clone_of"])
                if r.get("possible_clone_of")
                else "",
            ]
            for r in rows
        ],
    )
    return 0


def _restore(args: argparse.Namespace, module: Any) -> int:
    from .archive import ArchiveFailed

    stored = _find(module, args.vm)

    def report(fraction: float, detail: str) -> None:
        print(f"  {fraction:6.1%}  {detail}", file=sys.stderr)

    try:
        done = module.archives.restore(
            stored.endpoint,
            stored.vm.native_id,
            report,
            recovery_key_file=args.recovery_key_file,
            datastore=args.datastore,
        )
    except ArchiveFailed as e:
        print(f"dockyard-agent vm: restore of {stored.vm.name}: {e} ({e.code})", file=sys.stderr)
        return 1
    print(f"{stored.vm.name} restored" + (f": {', '.join(done)}" if done else ""))
    return 0


def _archive_key(args: argparse.Namespace, module: Any) -> int:
    """Only the file's path is kept (the key stays in its file, which should be 0600)."""
    given: Path = args.passphrase_file or args.recovery_key_file
    if not given.is_file():
        raise DriverError("bad_config", f"{given} is not a readable file")
    name = "archive_passphrase_file" if args.passphrase_file else "archive_recovery_key_file"
    module.update_settings(**{name: str(given.resolve())})
    loose = given.stat().st_mode & 0o077
    print(f"{name.replace('_', ' ')}: {given.resolve()}")
    if loose:
        print(f"warning: {given} can be read by others; chmod 600 it", file=sys.stderr)
    return 0


def _archived(args: argparse.Namespace, module: Any) -> int:
    from .archive import Journal

    rows = [
        {
            "endpoint": e,
            "native_id": n,
            "state": s.value,
            "reason": r,
            **(rec.model_dump(mode="json") if rec else {}),
        }
        for (e, n), (s, r, rec) in sorted(Journal(module.store).lives().items())
        if rec is not None or s.value.endswith("failed")
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table(
        ["vm", "state", "archived at", "size before", "stored", "restores", "reason"],
        [
            [
                f"{r['endpoint']}/{r['native_id']}",
                r["state"],
                str(r.get("archived_at") or "")[:19],
                r.get("size_before", 0),
                r.get("stored_bytes", 0),
                r.get("restore_count", 0),
                r["reason"],
            ]
            for r in rows
        ],
    )
    return 0


def _collect(args: argparse.Namespace, module: Any) -> int:
    for name, count in module.collect(module.clock()).items():
        print(f"{name}: {count} samples")
    return 0


def _run_lifecycle(args: argparse.Namespace, module: Any) -> int:
    report = module.run_lifecycle(module.clock())
    print(
        f"idle {report.idle}, proposed {len(report.proposed)}, acted {len(report.acted)},"
        f" held {len(report.held)}"
    )
    for line in report.errors:
        print(f"  {line}")
    return 0


def _policy_set(args: argparse.Namespace, module: Any) -> int:
    try:
        document = json.loads(args.file.read_text())
    except (OSError, ValueError) as e:
        raise DriverError("bad_policy", f"cannot read {args.file}: {e}") from e
    policy = module.set_local_policy(document)
    print(
        f"policy stored: idle after {policy.idle_days} days, notice "
        f"{policy.notice_hours:g} h, action {policy.action.value}"
    )
    return 0


def _policy_show(args: argparse.Namespace, module: Any) -> int:
    print(module.policy().model_dump_json(indent=2))
    return 0


def _power(args: argparse.Namespace, module: Any) -> int:
    stored = _find(module, args.vm)
    state = module.lifecycle.power(
        module.policy(),
        stored.endpoint,
        stored.vm.native_id,
        PowerAction(args.action),
        module.clock(),
        source="shell",
    )
    print(f"{stored.vm.name} is {state}")
    return 0


def _create(args: argparse.Namespace, module: Any) -> int:
    from . import placement

    tags = dict(t.split("=", 1) for t in args.tag if "=" in t)
    try:
        spec = placement.spec_from(
            {
                "name": args.name,
                "cpus": args.cpus,
                "memory_mb": args.memory_mb,
                "disks_gb": args.disk_gb or [8],
                "tags": tags,
            }
        )
    except ValueError as e:
        raise DriverError("bad_args", str(e)) from e
    vm, host, datastore = placement.create(module, args.endpoint, spec, module.clock())
    print(f"created {vm.name} ({args.endpoint}/{vm.native_id}) on {host.name}, {datastore.name}")
    return 0


def _approve(args: argparse.Namespace, module: Any) -> int:
    if not 1 <= args.count <= 1000:
        raise DriverError("bad_args", "approve between 1 and 1000 actions")
    pool = module.approve(args.count, "shell")
    print(f"{args.count} more action(s) may go past the budget ({pool} approved in all)")
    return 0


def _budget(args: argparse.Namespace, module: Any) -> int:
    policy = module.policy()
    budget, in_scope, used = module.lifecycle.budget(policy, module.clock())
    held = json.loads(module.store.mark("held") or "{}")
    if args.json:
        emit(
            {
                "budget": budget,
                "window_hours": policy.budget_window_hours,
                "share": policy.budget_share,
                "in_scope": in_scope,
                "used": used,
                "approved_extra": int(module.store.mark("approved_extra") or 0),
                "held": held,
            }
        )
        return 0
    print(
        f"budget {budget} per {policy.budget_window_hours:g} h "
        f"({policy.budget_share:.0%} of {in_scope} VMs in scope), used {used}, "
        f"approved past it {module.store.mark('approved_extra') or 0}"
    )
    if held.get("vms"):
        print(f"held at {held['at'][:16]}: {', '.join(held['vms'])}")
    return 0


def _audit(args: argparse.Namespace, module: Any) -> int:
    entries = module.store.audits(limit=10_000)[-max(1, args.limit) :]
    if args.json:
        emit(entries)
        return 0
    table(
        ["at", "action", "outcome", "target", "detail"],
        [
            [
                e["at"][:19],
                e["action"],
                e["outcome"],
                e["target"],
                " ".join(f"{k}={v}" for k, v in sorted(e["detail"].items()) if v),
            ]
            for e in entries
        ],
    )
    return 0


def _smtp(args: argparse.Namespace, module: Any) -> int:
    module.update_settings(
        smtp={
            "host": args.host,
            "port": args.port,
            "sender": args.sender,
            "starttls": args.starttls,
        }
    )
    print("SMTP server stored")
    return 0


def _links(args: argparse.Namespace, module: Any) -> int:
    links = module.settings().get("links", {})
    if args.listen:
        links["listen"] = args.listen
    if args.base_url:
        links["base_url"] = args.base_url
    module.update_settings(links=links)
    print(f"notice links point at {module._link_base()}")
    return 0


def _answer(args: argparse.Namespace, module: Any) -> int:
    print(module.answer(args.token))
    return 0


def _endpoint_list(args: argparse.Namespace, module: Any) -> int:
    shown = {
        name: {k: v for k, v in stored.items() if "password" not in k and "secret" not in k}
        for name, stored in module.endpoints.all().items()
    }
    if args.json:
        emit(shown)
        return 0
    table(
        ["name", "kind", "settings"],
        [
            [name, s.get("kind"), json.dumps({k: v for k, v in s.items() if k != "kind"})]
            for name, s in shown.items()
        ],
    )
    return 0


def _endpoint_remove(args: argparse.Namespace, module: Any) -> int:
    if not module.endpoints.remove(args.name):
        raise DriverError("unknown_endpoint", f"no endpoint named {args.name!r}")
    print(f"endpoint {args.name} removed")
    return 0


def _endpoint_add(args: argparse.Namespace, module: Any) -> int:
    config: dict[str, Any] = {"kind": args.kind}
    if args.kind == "vsphere":
        config.update(host=args.host, port=args.port, user=args.user, verify_tls=not args.insecure)
        if args.password_file:
            config["password"] = Path(args.password_file).read_text().strip()
    elif args.kind == "libvirt":
        hosts = []
        for item in args.libvirt_host:
            name, sep, uri = item.partition("=")
            hosts.append({"name": name, "uri": uri} if sep else {"uri": item})
        config["hosts"] = hosts
    else:
        config.update(region=args.region, endpoint_url=args.endpoint_url)
    module.endpoints.add(args.name, {k: v for k, v in config.items() if v is not None})
    print(f"endpoint {args.name} stored")
    return 0


def _never_act_list(args: argparse.Namespace, module: Any) -> int:
    rows = [
        {"vm": f"{endpoint}/{vm}", "reason": reason}
        for (endpoint, vm), reason in sorted(module.store.never_act().items())
    ]
    if args.json:
        emit(rows)
        return 0
    table(["vm", "reason"], [[r["vm"], r["reason"]] for r in rows])
    return 0


def _never_act_vm(text: str) -> tuple[str, str]:
    endpoint, sep, vm = text.partition("/")
    if not sep or not endpoint or not vm:
        raise DriverError("bad_args", "name the VM as endpoint/native-id, endpoint/name or */name")
    return endpoint, vm


def _never_act_add(args: argparse.Namespace, module: Any) -> int:
    endpoint, vm = _never_act_vm(args.vm)
    module.store.add_never_act(endpoint, vm, args.reason, module.clock())
    print(f"{args.vm} will never be acted on by this agent")
    return 0


def _never_act_remove(args: argparse.Namespace, module: Any) -> int:
    endpoint, vm = _never_act_vm(args.vm)
    if not module.store.remove_never_act(endpoint, vm):
        raise DriverError("not_found", f"{args.vm} is not on the list")
    print(f"{args.vm} removed from the list")
    return 0


def _explain(args: argparse.Namespace, module: Any) -> int:
    stored = _find(module, args.vm)
    key = (stored.endpoint, stored.vm.native_id)
    evaluation = module.store.evaluation(*key)
    decisions = module.store.decisions(*key, limit=5)
    if args.json:
        print(
            json.dumps(
                {
                    "vm": f"{key[0]}/{key[1]}",
                    "name": stored.vm.name,
                    "power_state": stored.vm.power_state,
                    "life_state": LifeBook(module.store)
                    .of(*key, stored.vm.power_state, evaluation)[0]
                    .value,
                    "evaluation": evaluation,
                    "last_active_at": stored.last_active_at.isoformat()
                    if stored.last_active_at
                    else None,
                    "decisions": [
                        {"decision": d.model_dump(mode="json"), "outcome": o} for d, o in decisions
                    ],
                },
                indent=2,
            )
        )
        return 0
    print(f"{stored.vm.name} ({key[0]}/{key[1]}), {stored.vm.power_state}")
    state, reason, record = LifeBook(module.store).of(*key, stored.vm.power_state, evaluation)
    print(f"  life state: {state.value}" + (f" ({reason})" if reason else ""))
    if record is not None:
        print(
            f"  archived {record.archived_at:%Y-%m-%d %H:%M} UTC, snapshot {record.snapshot[:12]},"
            f" {record.size_before} B before, {record.stored_bytes} B stored,"
            f" restored {record.restore_count}x"
        )
    if stored.last_active_at:
        print(f"  last active: {stored.last_active_at:%Y-%m-%d}")
    if evaluation is None:
        print("  not evaluated yet (it is evaluated while powered on)")
    else:
        window = evaluation.get("window", ["?", "?"])
        print(
            f"  {evaluation['state'].upper()} as of {evaluation['at'][:16]}, window "
            f"{window[0][:10]} to {window[1][:10]}, signals {', '.join(evaluation['signals'])}"
            f", days missing {evaluation['missing_days']}"
        )
        for reason in evaluation.get("reasons", []):
            print(f"  - {reason}")
    for decision, outcome in decisions:
        print(
            f"  decision {decision.decision_id[:8]}: {decision.proposed_action} "
            f"-> {outcome or 'open'} (owner {decision.owner or 'none'})"
        )
    return 0


EXAMPLES = {
    "vm endpoint add": "dockyard-agent vm endpoint add lab --kind vsphere --host vc.lab "
    "--user ops@vsphere.local --password-file /etc/dockyard/vc.pass",
    "vm endpoint list": "dockyard-agent vm endpoint list --json",
    "vm endpoint remove": "dockyard-agent vm endpoint remove lab",
    "vm discover": "dockyard-agent vm discover",
    "vm ls": "dockyard-agent vm ls --json | jq '.[] | select(.idle_state == \"idle\")'",
    "vm collect": "dockyard-agent vm collect",
    "vm run": "dockyard-agent vm run",
    "vm explain": "dockyard-agent vm explain lab/vm-42",
    "vm policy set": "dockyard-agent vm policy set ./vm-lifecycle.json",
    "vm policy show": "dockyard-agent vm policy show",
    "vm never-act add": "dockyard-agent vm never-act add 'lab/db-primary' --reason 'payroll'",
    "vm never-act remove": "dockyard-agent vm never-act remove lab/db-primary",
    "vm never-act list": "dockyard-agent vm never-act list",
    "vm power": "dockyard-agent vm power lab/vm-42 shutdown",
    "vm create": "dockyard-agent vm create --endpoint lab --name build-7 --cpus 2 "
    "--memory-mb 4096 --disk-gb 40 --tag owner=ana@example.com",
    "vm approve": "dockyard-agent vm approve 5",
    "vm budget": "dockyard-agent vm budget",
    "vm audit": "dockyard-agent vm audit --limit 20",
    "vm smtp": "dockyard-agent vm smtp --host mail.example.com --port 587 "
    "--sender dockyard@example.com --starttls",
    "vm links": "dockyard-agent vm links --listen 0.0.0.0:8443 "
    "--base-url https://dockyard.example.com:8443",
    "vm restore": "dockyard-agent vm restore lab/vm-42 --datastore datastore2",
    "vm archive-key": "dockyard-agent vm archive-key --passphrase-file /etc/dockyard/archive.pass",
    "vm archived": "dockyard-agent vm archived --json",
    "vm answer": "dockyard-agent vm answer 'eyJhbGciOi...'",
}
"""One example per command, shown under its --help (`commandline.finish`); a test parses
each with the real parser, so none can go stale."""
