"""`dockyard`: serve the cloud, migrate its database, an operator's admin acts, the demo."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import timedelta
from pathlib import Path

try:
    import sqlalchemy  # noqa: F401 - probe for the [cloud] extra
except ImportError:  # pragma: no cover - exercised by the agent-only install test
    print(
        "dockyard: the control plane needs the cloud extra: pip install 'dockyard[cloud]'",
        file=sys.stderr,
    )
    sys.exit(2)

from pydantic import ValidationError

from dockyard.agent.commandline import completion, finish, reader_left
from dockyard.agent.protocol import FlowMode
from dockyard.cloud import demo, logs
from dockyard.cloud.domain import admin, enrolment, tenants
from dockyard.cloud.domain.clock import SystemClock
from dockyard.cloud.domain.context import Ctx
from dockyard.cloud.domain.errors import Conflict, DomainError
from dockyard.cloud.domain.principal import Principal, Role
from dockyard.cloud.settings import Settings
from dockyard.cloud.store.db import Database
from dockyard.cloud.store.models import Site

log = logging.getLogger("dockyard")


def cmd_serve(args: argparse.Namespace) -> int:
    from dockyard.cloud.server import serve

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = Settings(**overrides)
    if settings.oidc_enabled:
        try:
            settings.oidc_client_secret()
        except ValueError as e:
            print(f"dockyard: {e}", file=sys.stderr)
            return 2
    serve(settings, migrate_first=not args.no_migrate)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from dockyard.cloud.server import migrate_database

    migrate_database(Settings())
    print("database schema is current")
    return 0


def bootstrap(
    settings: Settings, msp: str, tenant: str, email: str, *, flow: FlowMode, plan: str
) -> dict[str, str]:
    """An MSP, one customer tenant under it, a site, and a user who owns both. Idempotent."""
    clock = SystemClock()
    db = Database(settings.resolved_database_url())
    try:
        with db.transaction() as session:
            parent = admin.ensure_tenant(session, clock, msp, kind="msp", flow_mode=flow, plan=plan)
            child = admin.ensure_tenant(
                session,
                clock,
                tenant,
                kind="customer",
                flow_mode=flow,
                plan=plan,
                parent_id=parent.id,
            )
            user = admin.ensure_user(session, clock, email, email.split("@")[0])
            admin.ensure_membership(session, clock, parent.id, user.id, Role.OWNER)
            admin.ensure_membership(session, clock, child.id, user.id, Role.OWNER)
            ctx = Ctx(session, Principal.system(frozenset({child.id})), clock)
            from dockyard.cloud.store.tenancy import scope_session

            scope_session(session, [child.id])
            from sqlalchemy import select

            site = session.scalar(
                select(Site).where(Site.tenant_id == child.id, Site.name == "main")
            )
            if site is None:
                site = tenants.create_site(ctx, child.id, "main", None)
            return {
                "msp_id": str(parent.id),
                "tenant_id": str(child.id),
                "user_id": str(user.id),
                "site_id": str(site.id),
            }
    finally:
        db.dispose()


def cmd_bootstrap(args: argparse.Namespace) -> int:
    from dockyard.cloud.server import migrate_database

    settings = Settings()
    password = None
    if args.password_file:  # checked before anything is made, so a refusal leaves nothing
        try:
            password = read_password(settings, Path(args.password_file))
        except (OSError, DomainError) as e:
            print(f"dockyard: the password was not set: {e}", file=sys.stderr)
            return 2
    migrate_database(settings)
    ids = bootstrap(
        settings, args.msp, args.tenant, args.email, flow=FlowMode(args.flow_mode), plan=args.plan
    )
    ids["api_token"] = issue_token(settings, ids["user_id"])
    if password is not None:
        ids["password"] = set_password(settings, args.email, password)
    print(json.dumps(ids, indent=2))
    return 0


def read_password(settings: Settings, path: Path) -> str:
    """A first password from a file ("-": standard input), so it never shows in a process
    list; refused off the embedded default or when too short."""
    from dockyard.cloud.auth import passwords

    if not settings.embedded:
        raise DomainError(
            "passwords are only for the embedded default (SQLite); with DOCKYARD_DATABASE_URL"
            " set, users sign in through DOCKYARD_OIDC_ISSUER"
        )
    text = sys.stdin.readline() if str(path) == "-" else path.read_text()
    password = text.strip("\r\n")
    passwords.check_strength(password)
    return password


def set_password(settings: Settings, email: str, password: str) -> str:
    """Give the user its first local password: "set", or "kept" when it has one."""
    from dockyard.cloud.auth import passwords

    db = Database(settings.resolved_database_url())
    try:
        with db.transaction() as session:
            passwords.set_first_password(session, email, password)
        return "set"
    except Conflict:
        return "kept"
    finally:
        db.dispose()


def issue_token(settings: Settings, user_id: str) -> str:
    import uuid

    db = Database(settings.resolved_database_url())
    try:
        with db.transaction() as session:
            return admin.issue_api_token(session, SystemClock(), uuid.UUID(user_id), "cli")
    finally:
        db.dispose()


def enrolment_secret(settings: Settings, tenant_id: str, site_id: str, max_flow: FlowMode) -> str:
    import uuid

    tid = uuid.UUID(tenant_id)
    db = Database(settings.resolved_database_url())
    try:
        with db.transaction([tid]) as session:
            ctx = Ctx(session, Principal.system(frozenset({tid})), SystemClock())
            return enrolment.create_token(
                ctx, uuid.UUID(site_id), max_flow, timedelta(hours=1), "demo"
            ).secret
    finally:
        db.dispose()


def cmd_demo(args: argparse.Namespace) -> int:
    """The product's story on one machine (cloud/demo.py)."""
    return demo.run(args)


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("dockyard")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


EXAMPLES = {
    "serve": "DOCKYARD_DATABASE_URL=postgresql+psycopg://dockyard@db/dockyard dockyard serve "
    "--host 0.0.0.0 --port 8443",
    "migrate": "dockyard migrate",
    "bootstrap": "dockyard bootstrap --msp 'Acme IT' --tenant 'Example School' "
    "--email admin@example.com --flow-mode metadata",
    "demo": "dockyard demo --data .demo --port 8080",
    "completion": "dockyard completion bash > /etc/bash_completion.d/dockyard",
}
"""One example per command, shown under its --help (`commandline.finish`); a test parses
each with the real parser."""


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="dockyard",
        description=__doc__,
        epilog="settings: DOCKYARD_* variables or a .env file (infra/cloud.env.example, "
        "docs/operations.md)",
    )
    ap.add_argument("--version", action="version", version=f"dockyard {_version()}")
    sub = ap.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the control plane (settings from DOCKYARD_*)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--no-migrate", action="store_true", help="do not upgrade the schema first")
    sub.add_parser("migrate", help="upgrade the database schema to the newest")
    boot = sub.add_parser(
        "bootstrap", help="create an MSP, a tenant, a site and an owner with an API token"
    )
    boot.add_argument("--msp", required=True)
    boot.add_argument("--tenant", required=True)
    boot.add_argument("--email", required=True)
    boot.add_argument("--flow-mode", choices=[m.value for m in FlowMode], default="config")
    boot.add_argument("--plan", default="free")
    boot.add_argument(
        "--password-file",
        help="give the user this first password (embedded default only; '-' reads stdin)",
    )
    demo.add_arguments(
        sub.add_parser(
            "demo",
            help="the embedded default, a mail sink and a docked agent whose test VM goes "
            "idle, is noticed and shut down within minutes",
        )
    )
    comp = sub.add_parser("completion", help="print the shell's completion script")
    comp.add_argument("shell", choices=("bash", "zsh", "tcsh"))
    return finish(ap, EXAMPLES)


def cmd_completion(args: argparse.Namespace) -> int:
    print(completion(parser(), args.shell))
    return 0


COMMANDS = {
    "serve": cmd_serve,
    "migrate": cmd_migrate,
    "bootstrap": cmd_bootstrap,
    "demo": cmd_demo,
    "completion": cmd_completion,
}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as e:
        print(f"dockyard: invalid settings (DOCKYARD_* variables or .env): {e}", file=sys.stderr)
        return 2
    logs.configure(settings.log_format, settings.log_level)
    try:
        code = COMMANDS[args.command](args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:  # `dockyard completion bash | head`
        return reader_left()
    except KeyboardInterrupt:  # uvicorn raises it again once it has stopped on Ctrl-C
        return 130


if __name__ == "__main__":
    sys.exit(main())
