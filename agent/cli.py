"""`dockyard-agent`: dock, run, status, rotate-key, undock.

The enrolment token is read from a file or standard input, never from the command line,
where every user of the host could read it in the process list.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .crashpoints import ROTATION_POINT, crashpoint
from .errors import AgentError, AlreadyDocked, NotDocked
from .vault import cli as vault_cli

if TYPE_CHECKING:
    from . import protocol as p
    from .state import State

# What a command needs is imported by that command: `vault` starts without the protocol's
# models, the modules, the link and the runner (pydantic, authlib, joserfc, httpx), a
# quarter of a second sooner, which is most of a small restore.

DEFAULT_STATE = Path(os.environ.get("DOCKYARD_AGENT_STATE", "/var/lib/dockyard-agent"))


def host_facts() -> p.HostFacts:
    from . import protocol as p

    def read(path: str) -> str:
        try:
            return Path(path).read_text().strip()[:128]
        except OSError:
            return ""

    macs = []
    net = Path("/sys/class/net")
    if net.exists():
        for iface in sorted(net.iterdir()):
            mac = read(str(iface / "address"))
            if mac and mac != "00:00:00:00:00:00":
                macs.append(mac)
    return p.HostFacts(
        hostname=socket.gethostname()[:255],
        machine_id=os.environ.get("DOCKYARD_AGENT_MACHINE_ID") or read("/etc/machine-id"),
        bios_uuid=read("/sys/class/dmi/id/product_uuid")[:64],
        macs=macs[:64],
    )


def cmd_dock(args: argparse.Namespace, state: State) -> int:
    from . import keys
    from . import protocol as p
    from .link import Link
    from .modules import registry
    from .state import LinkRecord, utcnow

    if state.link(args.link) is not None:
        raise AlreadyDocked(f"already docked on link {args.link!r}; `dockyard-agent undock` first")
    if args.token_file:
        try:
            token = Path(args.token_file).read_text().strip()
        except OSError as e:
            raise AgentError(f"cannot read the token file: {e}") from e
    else:
        if sys.stdin.isatty():
            print("enrolment token: ", end="", file=sys.stderr, flush=True)
        token = sys.stdin.readline().strip()
    if not token:
        raise AgentError("no enrolment token given (use --token-file F, or pipe it on stdin)")
    key_path = state.key_path(args.link)
    key = keys.generate(key_path)
    link = Link(args.url, ca_bundle=args.ca_bundle)
    try:
        request = p.EnrollRequest(
            token=token,
            public_key=keys.public_b64(key),
            host=host_facts(),
            modules=[
                p.ModuleInfo(
                    name=n, version=c.version, standalone_features=sorted(c.standalone_features)
                )
                for n, c in registry().items()
            ],
            max_flow=p.FlowMode(args.max_flow),
        )
        answer = link.enroll(request)
    except Exception:
        key_path.unlink(missing_ok=True)
        raise
    finally:
        link.close()
    state.save_link(
        LinkRecord(
            name=args.link,
            url=link.url,
            agent_id=str(answer.agent_id),
            tenant_id=str(answer.tenant_id),
            site_id=str(answer.site_id),
            token_url=answer.token_url,
            key_file=str(key_path),
            max_flow=p.FlowMode(args.max_flow),
            flow_mode=answer.flow_mode,
            ca_bundle=str(Path(args.ca_bundle).resolve()) if args.ca_bundle else None,
            last_seq=0,
            docked_at=utcnow(),
            last_contact_at=None,
        )
    )
    print(f"docked: agent {answer.agent_id}, flow mode {answer.flow_mode.value}")
    if answer.possible_duplicate_of:
        print(
            "note: the cloud flagged this agent as a possible duplicate of "
            + ", ".join(map(str, answer.possible_duplicate_of))
        )
    return 0


def cmd_run(args: argparse.Namespace, state: State) -> int:
    from .runner import Runner

    runner = Runner(state, args.link)

    def _stop(signum: int, frame: Any) -> None:
        runner.request_stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    mode = "docked" if runner.link else "standalone"
    logging.getLogger(__name__).info("agent running (%s), state in %s", mode, state.dir)
    return runner.run()


def status(state: State) -> dict[str, Any]:
    from .modules import registry

    links = []
    for record in state.links():
        links.append(
            {
                "link": record.name,
                "url": record.url,
                "agent_id": record.agent_id,
                "tenant_id": record.tenant_id,
                "flow_mode": record.flow_mode.value,
                "max_flow": record.max_flow.value,
                "last_seq": record.last_seq,
                "last_contact_at": record.last_contact_at,
                "features": state.features(record.name),
                "policies": [
                    {"name": x["name"], "kind": x["kind"], "version": x["version"]}
                    for x in state.policies(record.name)
                ],
            }
        )
    return {
        "state_dir": str(state.dir),
        "docked": bool(links),
        "links": links,
        "modules": sorted(registry()),
        "host": platform.node(),
    }


def cmd_status(args: argparse.Namespace, state: State) -> int:
    info = status(state)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    if not info["docked"]:
        print(f"standalone (not docked); modules: {', '.join(info['modules'])}")
        return 0
    for link in info["links"]:
        print(f"link {link['link']}: {link['url']} agent {link['agent_id']}")
        print(
            f"  flow mode {link['flow_mode']} (local ceiling {link['max_flow']}), "
            f"sequence at {link['last_seq']}, last contact {link['last_contact_at'] or 'never'}"
        )
        for module, feats in sorted(link["features"].items()):
            print(f"  {module}: unlocked {', '.join(feats) or 'nothing'}")
    return 0


def cmd_rotate_key(args: argparse.Namespace, state: State) -> int:
    from . import keys
    from .link import Link

    record = state.link(args.link)
    if record is None:
        raise NotDocked(args.link)
    current = Path(record.key_file)
    pending = Path(record.key_file + ".next")
    link = Link(record.url, ca_bundle=record.ca_bundle)
    try:
        link.authenticate_as(record.agent_id, keys.load(current), record.token_url)
        keys.settle_rotation(link, current, pending)
        new_key = keys.generate(pending)
        # From here until the replace below the cloud may hold either key; settle_rotation
        # finds out which on the next start of `run` or `rotate-key`.
        link.rotate_key(keys.public_b64(new_key))
        crashpoint(ROTATION_POINT, state.dir)
    finally:
        link.close()
    os.replace(pending, current)
    print(f"rotated the key of agent {record.agent_id}")
    return 0


def cmd_undock(args: argparse.Namespace, state: State) -> int:
    record = state.link(args.link)
    if record is None:
        raise NotDocked(args.link)
    state.forget_link(args.link)
    Path(record.key_file).unlink(missing_ok=True)
    print(f"undocked from {record.url}; the modules go on standalone")
    return 0


def parser(vault_only: bool = False) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dockyard-agent", description=__doc__, allow_abbrev=False)
    ap.add_argument("--state", type=Path, default=DEFAULT_STATE, help="state directory")
    ap.add_argument("--link", default="default", help=argparse.SUPPRESS)
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="command", required=True)
    vault_cli.add_parser(sub)
    if vault_only:
        return ap
    from . import protocol as p
    from .modules.vm import cli as vm_cli

    dock = sub.add_parser("dock", help="enrol with a control plane", allow_abbrev=False)
    dock.add_argument("url")
    dock.add_argument("--token-file", help="file holding the enrolment token (else stdin)")
    dock.add_argument(
        "--max-flow",
        choices=[m.value for m in p.FlowMode],
        default="config",
        help="this site's ceiling on what may go up (default: config)",
    )
    dock.add_argument(
        "--ca-bundle", help="CA certificates to trust (e.g. a TLS-inspecting proxy's)"
    )
    sub.add_parser("run", help="run the modules; long-poll the cloud when docked")
    st = sub.add_parser("status", help="what this agent is docked with and what it has")
    st.add_argument("--json", action="store_true")
    sub.add_parser("rotate-key", help="replace the agent's key without enrolling again")
    sub.add_parser("undock", help="forget the link; modules go on standalone")
    vm_cli.add_parser(sub)
    return ap


def _command(argv: list[str]) -> str | None:
    """The sub-command named on the command line, past the global options."""
    it = iter(argv)
    for token in it:
        if token in ("--state", "--link"):
            next(it, None)
        elif not token.startswith("-"):
            return token
    return None


COMMANDS = {
    "dock": cmd_dock,
    "run": cmd_run,
    "status": cmd_status,
    "rotate-key": cmd_rotate_key,
    "undock": cmd_undock,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser(vault_only=_command(argv) == "vault").parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format='{"at":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","msg":"%(message)s"}',
    )
    if args.command == "vault":
        return vault_cli.main_guard(args)
    from .state import State

    if args.command == "vm":
        from .modules.vm import cli as vm_cli

        try:
            stored = State(args.state)
        except OSError as e:
            print(
                f"dockyard-agent: cannot open the state directory {args.state}: {e}",
                file=sys.stderr,
            )
            return 2
        try:
            policies = [r for r in stored.policies() if r["kind"] == "vm-lifecycle"]
        finally:
            stored.close()
        return vm_cli.main(args, args.state, policies)
    try:
        state = State(args.state)
    except OSError as e:
        print(f"dockyard-agent: cannot open the state directory {args.state}: {e}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[args.command](args, state)
    except AgentError as e:
        print(f"dockyard-agent: {e}", file=sys.stderr)
        return 1
    finally:
        state.close()


if __name__ == "__main__":
    sys.exit(main())
