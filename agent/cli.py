"""`dockyard-agent`: dock, run, status, rotate-key, undock, repair.

The enrolment token is read from a file or standard input, never from the command line,
where every user of the host could read it in the process list. Every failure the user can
act on ends in one line on standard error and an exit code (`errors.py` lists them), never a
traceback. Read-only commands (`status`, `--version`) create and write nothing, and a dock
that fails leaves the state directory as it found it.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import platform
import re
import signal
import socket
import sqlite3
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from . import logs
from .commandline import completion, finish, reader_left
from .crashpoints import ROTATION_POINT, crashpoint
from .errors import AgentError, AlreadyDocked, BadInput, NotDocked, StateDamaged
from .settings import AgentSettings, reference
from .vault import cli as vault_cli

if TYPE_CHECKING:
    from . import protocol as p
    from .modules.base import Module
    from .state import State

# What a command needs is imported by that command: `vault` starts without the protocol's
# models, the modules, the link and the runner (pydantic, authlib, joserfc, httpx), a
# quarter of a second sooner, which is most of a small restore.


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
        machine_id=AgentSettings.from_env().machine_id or read("/etc/machine-id"),
        bios_uuid=read("/sys/class/dmi/id/product_uuid")[:64],
        macs=macs[:64],
    )


# What the cloud's enrolment tokens are made of (URL-safe base64 after a prefix); the length
# bounds are the protocol's (`EnrollRequest.token`), checked by the model itself.
TOKEN_CHARS = re.compile(r"[A-Za-z0-9_-]+")


def read_token(args: argparse.Namespace) -> str:
    if args.token_file:
        try:
            token = Path(args.token_file).read_text().strip()
        except (OSError, UnicodeDecodeError) as e:
            raise BadInput(f"cannot read the token file {args.token_file}: {e}") from e
    else:
        if sys.stdin.isatty():
            print("enrolment token: ", end="", file=sys.stderr, flush=True)
        token = sys.stdin.readline().strip()
    if not token:
        raise BadInput("no enrolment token given (use --token-file F, or pipe it on stdin)")
    if not TOKEN_CHARS.fullmatch(token):
        raise BadInput(
            "the enrolment token is malformed (it holds characters a token never has); "
            "copy it again from the portal"
        )
    return token


def cmd_dock(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from . import keys
    from . import protocol as p
    from .link import Link, check_url
    from .modules import registry
    from .state import LinkRecord, State, key_path, utcnow

    url = check_url(args.url)
    existing = State.existing(args.state)
    if existing is not None:
        try:
            if existing.link(args.link) is not None:
                raise AlreadyDocked(
                    f"already docked on link {args.link!r}; `dockyard-agent undock` first"
                )
        finally:
            existing.close()
    token = read_token(args)
    key = keys.new()
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
            name=(args.name or "").strip(),
        )
    except ValidationError as e:
        if any(err["loc"] == ("name",) for err in e.errors()):
            raise BadInput("--name is at most 64 characters, with no control characters") from e
        if any(err["loc"] == ("token",) for err in e.errors()):
            raise BadInput(
                f"the enrolment token is malformed ({len(token)} characters, a token has "
                "16 to 128); copy it again from the portal"
            ) from e
        raise
    # Nothing is written before this point; from here a failure removes what was written.
    created = [d for d in (args.state, *args.state.parents) if not d.exists()]
    # Stored absolute: the agent runs from other directories than the one `dock` ran in.
    path = key_path(args.state.resolve(), args.link)
    link = Link(url, ca_bundle=args.ca_bundle)
    try:
        keys.save(key, path)
        answer = link.enroll(request)
    except BaseException:
        path.unlink(missing_ok=True)
        for directory in created:
            try:
                directory.rmdir()
            except OSError:
                break
        raise
    finally:
        link.close()
    state = State(args.state)
    try:
        state.save_link(
            LinkRecord(
                name=args.link,
                url=link.url,
                agent_id=str(answer.agent_id),
                tenant_id=str(answer.tenant_id),
                site_id=str(answer.site_id),
                token_url=answer.token_url,
                key_file=str(path),
                max_flow=p.FlowMode(args.max_flow),
                flow_mode=answer.flow_mode,
                ca_bundle=str(Path(args.ca_bundle).resolve()) if args.ca_bundle else None,
                last_seq=0,
                docked_at=utcnow(),
                last_contact_at=None,
            )
        )
    finally:
        state.close()
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
    logging.getLogger(__name__).info(
        "agent running (%s)", mode, extra={"mode": mode, "state_dir": str(state.dir)}
    )
    return runner.run()


def status(state: State | None, directory: Path) -> dict[str, Any]:
    from . import clock as clocks
    from .modules import registry

    links = []
    if state is not None:
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
                    "key_file": record.key_file,
                    "key_warning": _key_warning(record.key_file),
                    "features": state.features(record.name),
                    "policies": [
                        {"name": x["name"], "kind": x["kind"], "version": x["version"]}
                        for x in state.policies(record.name)
                    ],
                }
            )
    skew = clocks.Skew.load(directory, datetime.now(UTC)) if links else None
    return {
        "state_dir": str(directory),
        "docked": bool(links),
        "links": links,
        "clock_skew": None
        if skew is None
        else {"seconds": skew.seconds, "measured_at": skew.measured_at.isoformat()},
        "modules": sorted(registry()),
        "host": platform.node(),
    }


def _key_warning(key_file: str) -> str | None:
    """Why `run` and `rotate-key` would refuse the key file, for `status` to say without
    failing: it is the command an operator runs to see what is wrong."""
    from . import keys
    from .errors import KeyFileError

    try:
        keys.check(Path(key_file))
    except KeyFileError as e:
        return str(e)
    return None


def cmd_status(args: argparse.Namespace) -> int:
    from .state import State

    state = State.existing(args.state)
    try:
        info = status(state, args.state)
    finally:
        if state is not None:
            state.close()
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
        if link["key_warning"]:
            print(f"dockyard-agent: warning: {link['key_warning']}", file=sys.stderr)
    print(_skew_line(info["clock_skew"]))
    return 0


def _skew_line(skew: dict[str, Any] | None) -> str:
    """Notices and deadlines follow the cloud's clock: an operator reading a notice's time
    wants to know how far this machine's clock is from it."""
    if skew is None:
        return "clock: not measured against the cloud's in the last day"
    seconds = float(skew["seconds"])
    side = "ahead of" if seconds >= 0 else "behind"
    return f"clock: {abs(seconds):.1f} s {side} the cloud's (measured {skew['measured_at']})"


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
    from . import clock as clocks

    record = state.link(args.link)
    if record is None:
        raise NotDocked(args.link)
    state.forget_link(args.link)
    Path(record.key_file).unlink(missing_ok=True)
    if not state.links():
        # Standalone, the agent's own clock is the only one: a skew left behind would move
        # its notices by another machine's measurement if it docks elsewhere within a day.
        (args.state / clocks.SKEW_FILE).unlink(missing_ok=True)
    print(f"undocked from {record.url}; the modules go on standalone")
    return 0


def cmd_repair(args: argparse.Namespace) -> int:
    """Set a damaged `agent.db` aside and keep what can still be read from it."""
    from . import state as st

    reason = st.damage(args.state)
    if reason is None:
        where = args.state / st.DB_NAME
        print(f"{where} is sound; nothing to repair" if where.exists() else f"no {where} yet")
        return 0
    aside = st.set_aside(args.state, datetime.now(UTC))
    state = st.State(args.state)
    try:
        saved = st.salvage(aside, reason, state)
        links = state.links()
    finally:
        state.close()
    print(f"set the damaged agent.db aside as {aside} ({reason})")
    print("kept " + ", ".join(f"{n} {table} rows" for table, n in saved.rows.items()))
    if saved.incomplete:
        print(
            "could not read all of: " + ", ".join(saved.incomplete) + "; a command the cloud "
            "delivers again may repeat its effect if its journal entry was lost"
        )
    if links:
        print(f"docked as agent {links[0].agent_id} again; `dockyard-agent run` goes on")
    else:
        print("no link could be read: dock again (`dockyard-agent dock URL --token-file F`)")
    return 0


def version() -> str:
    from importlib import metadata

    try:
        return metadata.version("dockyard")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree
        return "unknown"


EPILOG = f"""exit codes: 0 done; 1 the command could not do its work; 2 bad input; 3 the cloud no
longer accepts this agent; 4 wrong vault key; 5 the local state needs a hand (damaged
agent.db: `dockyard-agent repair`; key file); 6 the cloud (or, for `vm discover`, an
endpoint) could not be reached; 141 the reader of the output went away.

environment (options on the command line win):
{reference()}"""

EXAMPLES = {
    "dock": "dockyard-agent dock https://dockyard.example.com --token-file ./enrol.token "
    "--name lab-agent-1",
    "run": "dockyard-agent run",
    "status": "dockyard-agent status --json",
    "rotate-key": "dockyard-agent rotate-key",
    "undock": "dockyard-agent undock",
    "repair": "dockyard-agent repair",
    "completion": "dockyard-agent completion bash > /etc/bash_completion.d/dockyard-agent",
}
"""One example per command, shown under its --help (`commandline.finish`); a test parses
each with the real parser, so none can go stale."""

SHELLS = ("bash", "zsh", "tcsh")


class _Version(argparse.Action):
    """`--version`, read from the installed package only when asked: `importlib.metadata`
    brings the email, zip and compression modules, which no other command needs, into the
    start of every `dockyard-agent vault` (see tests/vault/test_start.py)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, argparse.SUPPRESS, nargs=0, **kwargs)

    def __call__(self, ap: argparse.ArgumentParser, *_: Any) -> None:
        print(f"dockyard-agent {version()}")
        ap.exit()


def parser(vault_only: bool = False) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="dockyard-agent",
        description=__doc__,
        epilog=EPILOG,
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--version", action=_Version, help="show the version and exit")
    settings = AgentSettings.from_env()
    ap.add_argument(
        "--state",
        type=Path,
        default=settings.state_dir,
        help=f"state directory (default: {settings.state_dir}; $DOCKYARD_AGENT_STATE)",
    )
    ap.add_argument("--link", default="default", help=argparse.SUPPRESS)
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument(
        "--log-format",
        choices=logs.FORMATS,
        default=logs.default_format(),
        help=f"text (default) or json lines; also {logs.FORMAT_ENV}",
    )
    # httpx's request lines are logged only by `run`, the one command that polls.
    ap.set_defaults(quiet_http=True)
    # Each command names the function that runs it (`set_defaults(run=...)`, argparse's own
    # way to dispatch sub-commands), so adding one is one place, not a parser and a table.
    sub = ap.add_subparsers(dest="command", required=True)
    vault_cli.add_parser(sub).set_defaults(run=_vault)
    if vault_only:
        return finish(ap, vault_cli.EXAMPLES)
    from . import protocol as p
    from .modules import registry

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
    dock.add_argument(
        "--name", help="the name the portal shows for this agent (default: the host's name)"
    )
    dock.set_defaults(run=cmd_dock)
    run = sub.add_parser("run", help="run the modules; long-poll the cloud when docked")
    run.set_defaults(run=_with_state(cmd_run, create=True), quiet_http=False)
    st = sub.add_parser("status", help="what this agent is docked with and what it has")
    st.set_defaults(run=cmd_status)
    rotate = sub.add_parser("rotate-key", help="replace the agent's key without enrolling again")
    rotate.set_defaults(run=_with_state(cmd_rotate_key))
    undock = sub.add_parser("undock", help="forget the link; modules go on standalone")
    undock.set_defaults(run=_with_state(cmd_undock))
    repair = sub.add_parser(
        "repair", help="set a damaged agent.db aside and keep what can still be read from it"
    )
    repair.set_defaults(run=cmd_repair)
    examples = {**EXAMPLES, **vault_cli.EXAMPLES}
    for module in registry().values():  # each module's own commands, if it has any
        commands = module.add_cli(sub)
        if commands is not None:
            commands.set_defaults(run=functools.partial(_module_command, module))
            examples.update(module.cli_examples())
    comp = sub.add_parser("completion", help="print the shell's completion script")
    comp.add_argument("shell", choices=SHELLS)
    comp.set_defaults(run=lambda args: _completion(ap, args.shell))
    return finish(ap, examples)


def _completion(ap: argparse.ArgumentParser, shell: str) -> int:
    print(completion(ap, shell))
    return 0


def _command(argv: list[str]) -> str | None:
    """The sub-command named on the command line, past the global options."""
    it = iter(argv)
    for token in it:
        if token in ("--state", "--link", "--log-format"):
            next(it, None)
        elif not token.startswith("-"):
            return token
    return None


def _with_state(
    command: Callable[[argparse.Namespace, State], int], *, create: bool = False
) -> Callable[[argparse.Namespace], int]:
    """A command that changes the state, given it opened for writing. Only `run` creates
    it where there is none; the others say the agent is not docked, creating nothing. The
    commands without this open what they need themselves, read-only where they only read."""

    def with_state(args: argparse.Namespace) -> int:
        from .state import DB_NAME, State

        if not create and not (args.state / DB_NAME).exists():
            raise NotDocked(args.link)  # and nothing created to say so
        state = State(args.state)
        try:
            return command(args, state)
        finally:
            state.close()

    return with_state


def _vault(args: argparse.Namespace) -> int:
    if args.log_format == "json":
        args.no_progress = True  # standard error holds JSON lines only; no progress bars
    return vault_cli.main_guard(args)


def _module_command(module: type[Module], args: argparse.Namespace) -> int:
    """A module's command, given the policies of its kinds the cloud assigned, so the shell
    acts by the same policies as the running agent."""
    from .state import State

    stored = State.existing(args.state)
    try:
        policies = (
            [r for r in stored.policies() if r["kind"] in module.policy_kinds] if stored else []
        )
    finally:
        if stored is not None:
            stored.close()
    return module.run_cli(args, args.state, policies)


def _end_now(code: int) -> NoReturn:
    """A vault command run as the process's own command has finished: what it wrote is
    closed (a restore's files fsynced), its locks released and its threads joined. The
    interpreter's teardown after that took 0.05-0.5 s of a 2 GB restore's 6-15 s on the
    busy 2-core machine (0.01-0.03 s through `os._exit`, bench/README.md); the kernel frees
    the process's memory without it."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    as_command = argv is None  # the console script; tests and callers pass their argv
    argv = sys.argv[1:] if argv is None else argv
    args = parser(vault_only=_command(argv) == "vault").parse_args(argv)
    logs.configure(args.log_format, verbose=args.verbose, quiet_http=args.quiet_http)
    try:
        code = int(args.run(args))
        sys.stdout.flush()
        if as_command and args.command == "vault":
            _end_now(code)
        return code
    except BrokenPipeError:
        return reader_left()
    except AgentError as e:
        print(f"dockyard-agent: {e}", file=sys.stderr)
        return e.exit_code
    except sqlite3.DatabaseError as e:
        from .state import DB_NAME, is_damage

        if not is_damage(e):
            raise
        damaged = StateDamaged(args.state / DB_NAME, str(e))
        print(f"dockyard-agent: {damaged}", file=sys.stderr)
        return damaged.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
