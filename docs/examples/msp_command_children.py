"""An MSP's script: list every child tenant's agents and issue one command to each of them.

    pip install 'dockyard[client]'
    DOCKYARD_URL=https://cloud.example DOCKYARD_TOKEN=dy_pat_... \\
        python msp_command_children.py noop.echo --args '{"text": "hello"}'

The token is an API token of a member of the MSP tenant (made on the portal's settings
page, or with the createApiToken mutation). The cloud resolves it once to the member's
grants, and a membership of an MSP is a grant in each of its children: no header switches
tenants, each call names the child by its id. Issuing needs the operator role (or above)
in the MSP; a viewer's token lists but each child answers PermissionDenied.

One issueCommands per child (at most 1000 agents a call, all or none), so a refusal in
one child (archived since listed, an agent revoked meanwhile) leaves the others done.
Archived children are skipped (they take no commands); revoked agents are not listed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import pydantic

from dockyard.cloud.client import (
    AgentsAgentsAgentConnection,
    AgentsAgentsAgentConnectionEdgesNode,
    Client,
    GraphQLClientError,
    GraphQLClientGraphQLMultiError,
    GraphQLClientHttpError,
    IssueCommandsIssueCommandsIssuedCommands,
    TenantKind,
    TenantsTenantsTenantConnection,
    TenantsTenantsTenantConnectionEdgesNode,
)
from dockyard.cloud.client.base_client import HttpClient

PAGE = 100
BATCH = 1000  # the cloud's limit on agents in one issueCommands


def connect(url: str, token: str, *, verify: str | bool = True, timeout: float = 30) -> Client:
    """A client for the cloud at `url` (its root, e.g. https://cloud.example), sending
    `token` as a bearer API token on every call."""
    http = httpx.Client(
        headers={"Authorization": f"Bearer {token}"}, verify=verify, timeout=timeout
    )
    # The generated HttpClient protocol is an httpx.Client at run time, but ariadne-codegen
    # 0.19's spelling of `post` does not match httpx's keyword-only one for mypy (upstream
    # issue mirumee/ariadne-codegen#463), hence the cast.
    return Client(url=f"{url.rstrip('/')}/graphql", http_client=cast(HttpClient, http))


Tenant = TenantsTenantsTenantConnectionEdgesNode
Agent = AgentsAgentsAgentConnectionEdgesNode


class Refused(Exception):
    """The cloud answered a listing with one of its error types, e.g. PermissionDenied."""


def tenants(client: Client) -> Iterator[Tenant]:
    """Every tenant the token sees, page by page: its own and its MSPs' children."""
    after: str | None = None
    while True:
        answer = client.tenants(first=PAGE, after=after).tenants
        if not isinstance(answer, TenantsTenantsTenantConnection):
            raise Refused(f"{answer.typename__}: {answer.message}")
        yield from (edge.node for edge in answer.edges)
        if not answer.page_info.has_next_page:
            return
        after = answer.page_info.end_cursor


def child_tenants(client: Client, msp_id: str | None = None) -> list[Tenant]:
    """The live (not archived) children of `msp_id`, or of every MSP the token sees."""
    seen = list(tenants(client))
    msps = {t.id for t in seen if t.kind is TenantKind.MSP} if msp_id is None else {msp_id}
    return [t for t in seen if t.parent_id in msps and t.archived_at is None]


def agents(client: Client, tenant_id: str) -> list[Agent]:
    """Every agent of the tenant that is not revoked, all pages."""
    found: list[Agent] = []
    after: str | None = None
    while True:
        answer = client.agents(
            tenant_id=tenant_id, first=PAGE, after=after, include_revoked=False
        ).agents
        if not isinstance(answer, AgentsAgentsAgentConnection):
            raise Refused(f"{answer.typename__}: {answer.message}")
        found.extend(edge.node for edge in answer.edges)
        if not answer.page_info.has_next_page:
            return found
        after = answer.page_info.end_cursor


@dataclass
class ChildReport:
    """What happened in one child tenant."""

    tenant_id: str
    tenant_name: str
    agent_ids: list[str] = field(default_factory=list)
    command_ids: list[str] = field(default_factory=list)
    refused: str | None = None
    """The cloud's answer when it issued nothing in (part of) this child, e.g.
    'PermissionDenied: ...'; None when every agent got its command."""


def command_children(
    client: Client,
    name: str,
    args: dict[str, Any] | None = None,
    *,
    msp_id: str | None = None,
    ttl_seconds: int = 3600,
    timeout_seconds: int = 3600,
) -> list[ChildReport]:
    """Issue command `name` with `args` to every agent of every live child tenant; one
    report per child, in the order the cloud lists them."""
    reports = []
    for child in child_tenants(client, msp_id):
        report = ChildReport(child.id, child.name)
        reports.append(report)
        try:
            report.agent_ids = [a.id for a in agents(client, child.id)]
        except Refused as refusal:
            report.refused = str(refusal)
            continue
        for start in range(0, len(report.agent_ids), BATCH):
            answer = client.issue_commands(
                agent_ids=report.agent_ids[start : start + BATCH],
                name=name,
                args=args,
                ttl_seconds=ttl_seconds,
                timeout_seconds=timeout_seconds,
            ).issue_commands
            if isinstance(answer, IssueCommandsIssueCommandsIssuedCommands):
                report.command_ids.extend(c.id for c in answer.commands)
            else:
                report.refused = f"{answer.typename__}: {answer.message}"
    return reports


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Issue one command to every agent of every child tenant of your MSP.",
        epilog='example: DOCKYARD_TOKEN=dy_pat_... %(prog)s noop.echo --args \'{"text": "hi"}\'',
    )
    parser.add_argument("name", help="the command, module.action (e.g. noop.echo)")
    parser.add_argument("--args", default="{}", help="its arguments, a JSON object (default {})")
    parser.add_argument("--msp", help="only this MSP's children (default: every MSP you see)")
    parser.add_argument(
        "--url",
        default=os.environ.get("DOCKYARD_URL", "http://127.0.0.1:8080"),
        help="the cloud's root URL (default $DOCKYARD_URL, else http://127.0.0.1:8080)",
    )
    parser.add_argument("--ca", help="a CA bundle to trust for the cloud's certificate")
    parser.add_argument("--ttl", type=int, default=3600, help="seconds to deliver (3600)")
    parser.add_argument("--json", action="store_true", help="print the reports as JSON")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """0 when every child's agents got the command, 1 when a child refused, 2 for bad
    input or a cloud that could not be asked."""
    options = _arguments(argv)
    token = os.environ.get("DOCKYARD_TOKEN", "")
    if not token:
        print("set DOCKYARD_TOKEN to an API token of a member of the MSP", file=sys.stderr)
        return 2
    try:
        args = json.loads(options.args)
    except json.JSONDecodeError as bad:
        print(f"--args is not JSON: {bad}", file=sys.stderr)
        return 2
    if not isinstance(args, dict):
        print('--args must be a JSON object, e.g. \'{"text": "hi"}\'', file=sys.stderr)
        return 2
    client = connect(options.url, token, verify=options.ca or True)
    try:
        with client:
            reports = command_children(
                client, options.name, args, msp_id=options.msp, ttl_seconds=options.ttl
            )
    except GraphQLClientHttpError as refused:
        reason = "the token was refused" if refused.status_code == 401 else "the cloud refused"
        print(f"{reason} (HTTP {refused.status_code})", file=sys.stderr)
        return 2
    except GraphQLClientGraphQLMultiError as errors:
        print("; ".join(e.message for e in errors.errors), file=sys.stderr)
        return 2
    except pydantic.ValidationError as unknown:
        # A union the cloud's schema has grown since this client was generated, say.
        print(
            "the cloud answered in a shape this client does not know (a newer schema?):"
            f" upgrade dockyard[client] ({unknown.error_count()} fields did not fit)",
            file=sys.stderr,
        )
        return 2
    except (GraphQLClientError, httpx.HTTPError) as failed:
        print(f"could not ask the cloud at {options.url}: {failed}", file=sys.stderr)
        return 2
    if options.json:
        print(json.dumps([vars(r) for r in reports], indent=2))
    else:
        print(f"{'TENANT':<36}  {'AGENTS':>6}  {'ISSUED':>6}  NOTE")
        for r in reports:
            print(
                f"{r.tenant_name[:36]:<36}  {len(r.agent_ids):>6}  {len(r.command_ids):>6}"
                f"  {r.refused or ''}"
            )
    return 1 if any(r.refused for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
