"""The cloud's VM catalog: sightings from several agents merged only on two agreeing
identifiers, conflicts shown, merges undone; decisions and power commands through GraphQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from dockyard.agent import protocol as p
from dockyard.agent.errors import LinkRefused
from dockyard.agent.link import Link
from dockyard.cloud.store.db import Database

from ..factories import Gql, World, make_world
from ..integration.test_vault_brokered import docked_link
from ..procs import Cloud

VMS = """query($t: ID!, $idle: IdleState, $host: String, $owner: String) {
  vms(tenantId: $t, idleState: $idle, host: $host, owner: $owner) {
    __typename ... on VmConnection { edges { node { id name conflict sightings {
      id agentId endpoint nativeId name powerState host owner idleState pinned
      possibleClone possibleCloneOf } } } }
    ... on TenantNotFound { message } } }"""
SPLIT = """mutation($s: ID!) { splitVmSighting(sightingId: $s) {
  __typename ... on VmSighting { id pinned } ... on VmSightingNotFound { message } } }"""
POWER = """mutation($s: ID!, $a: PowerAction!) { powerVm(sightingId: $s, action: $a) {
  __typename ... on Command { id name args state } ... on InvalidInput { message }
  ... on VmSightingNotFound { message } } }"""


def dock(cloud: Cloud, world: World, tmp_path: Path) -> tuple[Link, str]:
    link = docked_link(cloud, world, tmp_path, p.FlowMode.METADATA)
    return link, str(link.agent_id)


def record(endpoint: str, native_id: str, name: str, **ids: Any) -> dict[str, Any]:
    return {
        "endpoint": endpoint,
        "native_id": native_id,
        "name": name,
        "kind": "vm",
        "power_state": "on",
        "host": "esx1",
        "owner": f"{name}@example.com",
        "identifiers": {"macs": [], **ids},
        "idle_state": "active",
        "seen_at": datetime.now(UTC).isoformat(),
    }


def send(link: Link, records: list[dict[str, Any]], kind: str = "vm.inventory") -> None:
    link.metadata(p.MetadataBatch(batch_id=uuid.uuid4(), module="vm", kind=kind, records=records))


def test_two_agents_merge_on_two_identifiers_and_clones_stay_apart(
    cloud: Cloud, pg: Database, tmp_path: Path
) -> None:
    world = make_world(pg)
    gql = Gql(cloud.url, world.token)
    first, first_id = dock(cloud, world, tmp_path)
    second, second_id = dock(cloud, world, tmp_path)
    send(
        first,
        [
            record("vc", "vm-1", "web", instance_uuid="I-1", bios_uuid="B-1", macs=["aa:01"]),
            record("vc", "vm-2", "clone", instance_uuid="I-2", bios_uuid="B-1", macs=["aa:02"]),
            record("vc", "vm-3", "twin-a", bios_uuid="B-3", macs=["aa:03"]),
        ],
    )
    send(
        second,
        [
            # the same VM seen through another vCenter connection: instance UUID and BIOS agree
            record("vc2", "vm-77", "web", instance_uuid="i-1", bios_uuid="b-1"),
            # shares only the BIOS UUID with web and clone: a clone, not the same VM
            record("vc2", "vm-78", "clone2", bios_uuid="B-1", macs=["bb:01"]),
        ],
    )
    items = gql.nodes(VMS, t=str(world.tenant_id))
    by_name = {v["name"]: v for v in items}
    assert len(items) == 4
    web = by_name["web"]
    assert sorted((s["agentId"], s["nativeId"]) for s in web["sightings"]) == sorted(
        [(first_id, "vm-1"), (second_id, "vm-77")]
    )
    assert len(by_name["clone"]["sightings"]) == 1
    assert len(by_name["clone2"]["sightings"]) == 1
    assert all(v["conflict"] is None for v in items)
    # Sharing a BIOS UUID with another VM is a visible flag, whichever agent saw them; the
    # two sightings of web (one VM) do not flag each other.
    flagged = {
        s["nativeId"]: set(s["possibleCloneOf"])
        for v in items
        for s in v["sightings"]
        if s["possibleClone"]
    }
    ids = {s["nativeId"]: s["id"] for v in items for s in v["sightings"]}
    assert flagged == {
        "vm-1": {ids["vm-2"], ids["vm-78"]},
        "vm-77": {ids["vm-2"], ids["vm-78"]},
        "vm-2": {ids["vm-1"], ids["vm-77"], ids["vm-78"]},
        "vm-78": {ids["vm-1"], ids["vm-77"], ids["vm-2"]},
    }
    assert by_name["twin-a"]["sightings"][0]["possibleCloneOf"] == []

    # A sighting that agrees with two different VMs on two identifiers each is not merged.
    send(
        second,
        [
            record(
                "vc2",
                "vm-79",
                "ambiguous",
                instance_uuid="I-2",
                bios_uuid="B-3",
                macs=["aa:02", "aa:03"],
            )
        ],
    )
    items = gql.nodes(VMS, t=str(world.tenant_id))
    ambiguous = next(v for v in items if v["name"] == "ambiguous")
    assert len(ambiguous["sightings"]) == 1
    assert "matches several VMs" in ambiguous["conflict"]

    # Undo the merge of web: the second agent's sighting gets a record of its own, for good.
    sighting = next(s for s in web["sightings"] if s["agentId"] == second_id)
    split = gql.data(SPLIT, s=sighting["id"])["splitVmSighting"]
    assert split == {"__typename": "VmSighting", "id": sighting["id"], "pinned": True}
    send(second, [record("vc2", "vm-77", "web", instance_uuid="i-1", bios_uuid="b-1")])
    webs = [v for v in gql.nodes(VMS, t=str(world.tenant_id)) if v["name"] == "web"]
    assert sorted(len(v["sightings"]) for v in webs) == [1, 1]

    # Filters, and a command addressed to one sighting.
    owned = gql.nodes(VMS, t=str(world.tenant_id), owner="clone@example.com")
    assert [v["name"] for v in owned] == ["clone"]
    command = gql.data(POWER, s=owned[0]["sightings"][0]["id"], a="SHUTDOWN")["powerVm"]
    assert command["name"] == "vm.power"
    assert command["args"] == {"endpoint": "vc", "native_id": "vm-2", "action": "shutdown"}
    bad = gql.raw(POWER, s=owned[0]["sightings"][0]["id"], a="EXPLODE")
    assert bad.get("data") is None  # not a PowerAction: GraphQL refuses it before any resolver
    assert "PowerAction" in bad["errors"][0]["message"]

    # Another tenant sees none of it and cannot address it.
    stranger = make_world(pg)
    other = Gql(cloud.url, stranger.token)
    assert other.data(VMS, t=str(world.tenant_id))["vms"]["__typename"] == "TenantNotFound"
    refused = other.data(POWER, s=owned[0]["sightings"][0]["id"], a="SHUTDOWN")["powerVm"]
    assert refused["__typename"] == "VmSightingNotFound"


def test_a_malformed_inventory_batch_stores_nothing(
    cloud: Cloud, pg: Database, tmp_path: Path
) -> None:
    world = make_world(pg)
    link, _ = dock(cloud, world, tmp_path)
    good = record("vc", "vm-1", "fine", instance_uuid="I-9")
    bad = {"endpoint": "vc", "name": "no native id"}
    with pytest.raises(LinkRefused) as refused:
        send(link, [good, bad])
    assert refused.value.status == 422
    assert "vm.inventory record is malformed" in refused.value.message
    items = Gql(cloud.url, world.token).nodes(VMS, t=str(world.tenant_id))
    assert items == []


def test_vm_lifecycle_policies_are_validated_and_versioned(cloud: Cloud, pg: Database) -> None:
    world = make_world(pg)
    gql = Gql(cloud.url, world.token)
    create = """mutation($t: ID!, $d: JSON!) { createPolicy(tenantId: $t, name: "idle",
      kind: "vm-lifecycle", document: $d) { __typename ... on Policy { id currentVersion }
      ... on InvalidInput { message } } }"""
    bad = gql.data(create, t=str(world.tenant_id), d={"thresholds": {"cpu": 0}})["createPolicy"]
    assert bad["__typename"] == "InvalidInput"
    assert "cpu threshold 0 can never be undercut" in bad["message"]
    worse = gql.data(create, t=str(world.tenant_id), d={"idle_days": 1, "notice_hours": 48})
    assert "not shorter than the idle period" in worse["createPolicy"]["message"]
    good = gql.data(create, t=str(world.tenant_id), d={"idle_days": 60})["createPolicy"]
    assert good["currentVersion"] == 1
    version = gql.data(
        """mutation($p: ID!) { newPolicyVersion(policyId: $p,
      document: {idle_days: 45, off_days: 10}) { __typename ... on PolicyVersion { version
      document } } }""",
        p=good["id"],
    )["newPolicyVersion"]
    assert version["version"] == 2
    assert version["document"]["idle_days"] == 45
    assert version["document"]["thresholds"]["cpu"] == 5.0  # defaults filled in, stored


LIFE = """query($t: ID!) { vms(tenantId: $t) { __typename ... on VmConnection {
  edges { node { name lifeState sightings { nativeId } } } } } }"""


@pytest.mark.parametrize("old_seen_later_s", [0, 5])
def test_a_restored_instance_is_the_vm_s_present_whatever_the_old_id_s_seen_at(
    cloud: Cloud, pg: Database, tmp_path: Path, old_seen_later_s: int
) -> None:
    """An EC2 restore gives the VM a new id and the agent may go on reporting the old,
    terminated one in the same inventory, with the same `seen_at` (or a later one). The VM's
    life state is the new instance's: the old sighting was superseded, which `seen_at` alone
    cannot tell (CI once saw the old one's OFF through the tie). And the old id's sighting,
    reported again, stays in the VM its successor joined."""
    world = make_world(pg)
    link, _ = dock(cloud, world, tmp_path)
    seen = datetime(2026, 6, 1, 12, tzinfo=UTC)
    archive = {
        "archived_at": seen.isoformat(),
        "snapshot": "s1",
        "repository": "r1",
        "size_before": 1 << 30,
        "stored_bytes": 1 << 20,
        "restore_count": 1,
        "restored_from": "i-old",
    }
    new = record("aws", "i-new", "web", ec2_instance_id="i-new") | {
        "seen_at": seen.isoformat(),
        "archive": archive,
    }
    old = record("aws", "i-old", "web", ec2_instance_id="i-old") | {
        "seen_at": seen.replace(second=old_seen_later_s).isoformat(),
        "power_state": "gone",
        "life_state": "off",
    }
    try:
        send(link, [new, old])
        send(link, [old, new])  # a later inventory must not split the link apart again
        data = Gql(cloud.url, world.token).data(LIFE, t=str(world.tenant_id))
    finally:
        link.close()
    (edge,) = data["vms"]["edges"]
    assert {s["nativeId"] for s in edge["node"]["sightings"]} == {"i-old", "i-new"}
    assert edge["node"]["lifeState"] == "RUNNING"
    assert edge["node"]["sightings"][-1]["nativeId"] == "i-new"


ONE = """query($v: ID!) { vm(id: $v) { __typename ... on Vm { name lifeState idleness {
  state at windowStart windowEnd reasons thresholds { signal value }
  days { day figures { signal value } } } } ... on Error { message } } }"""


def test_one_vm_reads_with_its_idleness_judgement(
    cloud: Cloud, pg: Database, tmp_path: Path
) -> None:
    """The VM page's read: the newest sighting's judgement as the agent sent it (reasons,
    thresholds, the judged days' figures); a VM without one reads with null; another
    tenant's id and a bad one answer as a missing VM and a sentence."""
    world, other = make_world(pg), make_world(pg)
    link, _ = dock(cloud, world, tmp_path)
    judged = {
        "state": "idle",
        "at": "2026-06-03T09:00:00+00:00",
        "window_start": "2026-06-01T00:00:00+00:00",
        "window_end": "2026-06-03T00:00:00+00:00",
        "reasons": ["cpu peak stayed under 5% on every day of 2"],
        "thresholds": {"cpu": 5.0},
        "statistics": {"cpu": "peak"},
        "days": [
            {"day": "2026-06-01T00:00:00+00:00", "figures": {"cpu": 1.5}},
            {"day": "2026-06-02T00:00:00+00:00", "figures": {"cpu": 2.25}},
        ],
    }
    try:
        send(
            link,
            [record("vc", "vm-1", "quiet") | {"idleness": judged}, record("vc", "vm-2", "new")],
        )
    finally:
        link.close()
    gql = Gql(cloud.url, world.token)
    edges = gql.data(VMS, t=str(world.tenant_id))["vms"]["edges"]
    ids = {e["node"]["name"]: e["node"]["id"] for e in edges}
    vm = gql.data(ONE, v=ids["quiet"])["vm"]
    assert vm["__typename"] == "Vm"
    got = vm["idleness"]
    assert (got["state"], got["reasons"]) == ("IDLE", judged["reasons"])
    assert got["thresholds"] == [{"signal": "cpu", "value": 5.0}]
    assert [(d["day"][:10], d["figures"]) for d in got["days"]] == [
        ("2026-06-01", [{"signal": "cpu", "value": 1.5}]),
        ("2026-06-02", [{"signal": "cpu", "value": 2.25}]),
    ]
    assert gql.data(ONE, v=ids["new"])["vm"]["idleness"] is None
    theirs = Gql(cloud.url, other.token).data(ONE, v=ids["quiet"])["vm"]
    missing = gql.data(ONE, v=str(uuid.uuid4()))["vm"]
    assert theirs == missing
    assert missing["__typename"] == "VmNotFound"
    bad = gql.data(ONE, v="not-an-id")["vm"]
    assert bad["__typename"] == "InvalidInput"
