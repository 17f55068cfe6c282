"""Free text with a NUL or another control character, sent to the mutations that store it,
is refused as `InvalidInput` naming the field, and nothing is stored; over HTTP, against
the real cloud on PostgreSQL (which cannot hold a NUL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from dockyard.cloud.store.db import Database
from dockyard.cloud.store.models import Command, EnrolmentToken, Policy, Site, Tenant

from ..factories import Gql, enrol_agent, make_world
from ..procs import Cloud

ANSWER = "__typename ... on InvalidInput { message }"
CASES = {
    "createTenant": (
        f"mutation($m: ID!, $s: String!) {{ r: createTenant(parentId: $m, name: $s) {{ {ANSWER} }} }}",
        "name",
    ),
    "renameTenant": (
        f"mutation($t: ID!, $s: String!) {{ r: renameTenant(tenantId: $t, name: $s) {{ {ANSWER} }} }}",
        "name",
    ),
    "createSite": (
        f"mutation($t: ID!, $s: String!) {{ r: createSite(tenantId: $t, name: $s) {{ {ANSWER} }} }}",
        "name",
    ),
    "createEnrolmentToken": (
        f"mutation($site: ID!, $s: String!) {{ r: createEnrolmentToken(siteId: $site, note: $s) "
        f"{{ {ANSWER} }} }}",
        "note",
    ),
    "createPolicy": (
        f"mutation($t: ID!, $s: String!) {{ r: createPolicy(tenantId: $t, name: $s, kind: "
        f'"noop", document: {{}}) {{ {ANSWER} }} }}',
        "name",
    ),
    "issueCommand": (
        f'mutation($a: ID!, $s: String!) {{ r: issueCommand(agentId: $a, name: "noop.append", '
        f"idempotencyKey: $s) {{ {ANSWER} }} }}",
        "idempotency key",
    ),
}


def _counts(pg: Database) -> dict[str, Any]:
    with pg.engine.connect() as conn:
        counted = {
            m.__name__: conn.scalar(select(func.count()).select_from(m))
            for m in (Tenant, Site, EnrolmentToken, Policy, Command)
        }
        counted["names"] = sorted(conn.scalars(select(Tenant.name)))
    return counted


@pytest.mark.parametrize("bad", ["Riverside\x00School", "Riverside\x1b[2J", "tab\there"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_control_characters_are_invalid_input_naming_the_field(
    cloud: Cloud, pg: Database, tmp_path: Path, case: str, bad: str
) -> None:
    world = make_world(pg)
    agent_id = enrol_agent(world, tmp_path) if case == "issueCommand" else None
    gql = Gql(cloud.url, world.token)
    variables = {
        "m": str(world.msp_id),
        "t": str(world.tenant_id),
        "site": str(world.site_id),
        "a": str(agent_id),
    }
    query, field = CASES[case]
    used = {k: v for k, v in variables.items() if f"${k}:" in query}
    before = _counts(pg)
    answer = gql.data(query, s=bad, **used)["r"]
    assert answer["__typename"] == "InvalidInput", answer
    assert answer["message"].startswith(f"{field} may not contain control characters"), answer
    assert _counts(pg) == before


def test_surrounding_whitespace_is_trimmed_and_the_name_kept(cloud: Cloud, pg: Database) -> None:
    """A name pasted with its newline is stripped, not refused."""
    world = make_world(pg)
    gql = Gql(cloud.url, world.token)
    answer = gql.data(
        'mutation($t: ID!) { renameTenant(tenantId: $t, name: "  Hall \\n") '
        "{ __typename ... on Tenant { name } } }",
        t=str(world.tenant_id),
    )["renameTenant"]
    assert answer == {"__typename": "Tenant", "name": "Hall"}


@pytest.mark.parametrize("field", ["host", "owner", "powerState"])
def test_a_control_character_in_a_vm_filter_is_invalid_input(
    cloud: Cloud, pg: Database, field: str
) -> None:
    world = make_world(pg)
    gql = Gql(cloud.url, world.token)
    answer = gql.data(
        f"query($t: ID!, $s: String!) {{ r: vms(tenantId: $t, {field}: $s) {{ {ANSWER} }} }}",
        t=str(world.tenant_id),
        s="db\x0001",
    )["r"]
    assert answer["__typename"] == "InvalidInput", answer
    assert answer["message"].startswith(f"{field} may not contain control characters")
