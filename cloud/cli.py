"""`dockyard`: serve the cloud, migrate its database, an operator's admin acts, the demo."""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
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

import httpx
from pydantic import ValidationError

from dockyard.agent.commandline import completion, finish
from dockyard.agent.protocol import FlowMode
from dockyard.cloud import logs
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


def free_port(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"dockyard: the cloud exited with {proc.returncode}; see above")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"dockyard: the cloud did not answer at {url} within {timeout:.0f}s")


VMS_QUERY = (
    "query($t: ID!) { vms(tenantId: $t) { ... on VmConnection { edges { node { name sightings {"
    " endpoint nativeId powerState idleState host } } } } } }"
)


def demo_vm_endpoint(agent_cmd: list[str]) -> bool:
    """Give the demo agent libvirt's built-in test host as a VM endpoint, when the agent's
    libvirt driver is installed (it is with `make demo`)."""
    if importlib.util.find_spec("libvirt") is None:
        return False
    subprocess.run(
        [
            *agent_cmd,
            "vm",
            "endpoint",
            "add",
            "demo-kvm",
            "--kind",
            "libvirt",
            "--libvirt-host",
            "kvm-test=test:///default",
        ],
        check=True,
        capture_output=True,
    )
    return True


AGENTS_QUERY = (
    "query($t: ID!) { agents(tenantId: $t) { ... on AgentConnection "
    "{ edges { node { id name lastSeenAt } } } } }"
)


def cmd_demo(args: argparse.Namespace) -> int:
    """The embedded default end to end: cloud on SQLite, a docked agent, the URL and a token."""
    data = Path(args.data).resolve()
    (data / "cloud").mkdir(parents=True, exist_ok=True)
    port_file = data / "port"
    if port_file.exists():
        port = int(port_file.read_text())
        if free_port(port) != port:
            raise SystemExit(
                f"dockyard: port {port} of this demo is in use; is it running already?"
            )
    else:
        port = free_port(args.port)
        port_file.write_text(str(port))
    url = f"http://127.0.0.1:{port}"
    env = os.environ | {
        "DOCKYARD_DATA_DIR": str(data / "cloud"),
        "DOCKYARD_PUBLIC_URL": url,
        "DOCKYARD_PORT": str(port),
        "DOCKYARD_LOG_LEVEL": "warning",
    }
    for key in ("DOCKYARD_DATABASE_URL", "DOCKYARD_SECRET_KEY", "DOCKYARD_BLOB_DIR"):
        env.pop(key, None)
    settings = Settings(data_dir=data / "cloud", public_url=url, port=port)
    from dockyard.cloud.server import migrate_database

    migrate_database(settings)
    ids = bootstrap(
        settings,
        "Demo MSP",
        "Demo School",
        "demo@example.com",
        flow=FlowMode.METADATA,
        plan="enterprise",
    )
    api_token_file = data / "api-token"
    if not api_token_file.exists():
        secret = issue_token(settings, ids["user_id"])
        fd = os.open(api_token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret)
    api_token = api_token_file.read_text().strip()
    # The portal's sign-in on the embedded default: a local password, made once, kept
    # beside the API token (0600).
    password_file = data / "portal-password"
    if not password_file.exists():
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(12))
    portal_password = password_file.read_text().strip()
    set_password(settings, "demo@example.com", portal_password)

    bindir = Path(sys.executable).parent
    cloud = subprocess.Popen([str(bindir / "dockyard"), "serve", "--no-migrate"], env=env)
    agent: subprocess.Popen[bytes] | None = None
    try:
        wait_healthy(url, cloud)
        agent_state = data / "agent"
        agent_cmd = [str(bindir / "dockyard-agent"), "--state", str(agent_state)]
        status = subprocess.run(
            [*agent_cmd, "status", "--json"], capture_output=True, text=True, check=True
        )
        links = json.loads(status.stdout)["links"]
        if links and links[0]["url"] != url:
            subprocess.run([*agent_cmd, "undock"], check=True, capture_output=True)
            links = []
        if not links:
            secret = enrolment_secret(settings, ids["tenant_id"], ids["site_id"], FlowMode.METADATA)
            with tempfile.NamedTemporaryFile("w", dir=data, delete=False) as secret_file:
                secret_file.write(secret)
            try:
                subprocess.run(
                    [
                        *agent_cmd,
                        "dock",
                        url,
                        "--token-file",
                        secret_file.name,
                        "--max-flow",
                        "metadata",
                    ],
                    check=True,
                )
            finally:
                os.unlink(secret_file.name)
        vm_note = ""
        if demo_vm_endpoint(agent_cmd):
            query = json.dumps({"query": VMS_QUERY, "variables": {"t": ids["tenant_id"]}})
            vm_note = f"""
The agent's VM module watches libvirt's test host (endpoint demo-kvm) on a clock where a
day passes in a minute; its inventory goes up in metadata mode. The VM catalog:
  curl -s {url}/graphql -H 'Authorization: Bearer {api_token}' \\
       -H 'Content-Type: application/json' -d '{query}'
  {agent_cmd[0]} --state {agent_state} vm explain test
"""
        # A demo day passes in a minute, so the VM module's timers show in minutes.
        agent = subprocess.Popen(
            [*agent_cmd, "run"], env=os.environ | {"DOCKYARD_CLOCK": "scale:1440"}
        )
        print(
            f"""
Dockyard demo is running (data in {data}; Ctrl-C stops it).

  portal:             {url}/portal/
                      sign in as demo@example.com, password {portal_password}
                      (kept in {password_file})
  GraphQL / GraphiQL: {url}/graphql
  agent protocol:     {url}/agent/v1/openapi.json
  API token:          {api_token}
  tenant id:          {ids["tenant_id"]}

Try:
  curl -s {url}/graphql -H 'Authorization: Bearer {api_token}' \\
       -H 'Content-Type: application/json' -d @- <<'JSON'
{json.dumps({"query": AGENTS_QUERY, "variables": {"t": ids["tenant_id"]}})}
JSON
{vm_note}""",
            flush=True,
        )
        while cloud.poll() is None and agent.poll() is None:
            time.sleep(0.5)
        return 1
    except KeyboardInterrupt:
        print("\nstopping…", flush=True)
        return 0
    finally:
        for proc in (agent, cloud):
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in (agent, cloud):
            if proc is not None:
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()


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
    demo = sub.add_parser("demo", help="the embedded default with a docked agent")
    demo.add_argument("--data", default=".demo")
    demo.add_argument("--port", type=int, default=8080)
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
    except BrokenPipeError:  # `dockyard completion bash | head`: end as a writer whose reader left
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141
    except KeyboardInterrupt:  # uvicorn raises it again once it has stopped on Ctrl-C
        return 130


if __name__ == "__main__":
    sys.exit(main())
