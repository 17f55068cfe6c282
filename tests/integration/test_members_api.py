"""Members through GraphQL, as the portal's settings page uses them: invite by e-mail,
change a role, remove; each audited, refused for a viewer, blind to other tenants, and
never leaving a tenant without its last admin or owner. Over HTTP, against the real cloud
on PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from dockyard.cloud.auth import oidc
from dockyard.cloud.domain.principal import Role
from dockyard.cloud.store.db import Database
from dockyard.cloud.store.models import User

from ..factories import Gql, add_user, answers_as_missing, audit_log, make_world, refusals
from ..procs import Cloud

MEMBERS = """query($t: ID!) { members(tenantId: $t, first: 100) { __typename
  ... on MemberConnection { edges { node { userId email role via mspId invited } } }
  ... on Error { message } } }"""
INVITE = """mutation($t: ID!, $e: String!, $r: Role!) { inviteMember(tenantId: $t, email: $e,
  role: $r) { __typename ... on Member { userId email role via invited } ... on Error { message } } }"""
CHANGE = """mutation($t: ID!, $u: ID!, $r: Role!) { changeMemberRole(tenantId: $t, userId: $u,
  role: $r) { __typename ... on Member { userId role } ... on Error { message } } }"""
REMOVE = """mutation($t: ID!, $u: ID!) { removeMember(tenantId: $t, userId: $u) {
  __typename ... on Member { userId role } ... on Error { message } } }"""


def _members(gql: Gql, tenant_id: uuid.UUID) -> list[dict[str, Any]]:
    answer = gql.data(MEMBERS, t=str(tenant_id))["members"]
    assert answer["__typename"] == "MemberConnection", answer
    return [e["node"] for e in answer["edges"]]


def _email() -> str:
    return f"new-{uuid.uuid4().hex[:8]}@Example.com"


def test_an_admin_invites_changes_and_removes_each_audited(cloud: Cloud, pg: Database) -> None:
    world = make_world(pg)
    admin_id, token = add_user(pg, world.tenant_id, Role.ADMIN)
    gql = Gql(cloud.url, token)
    email = _email()

    invited = gql.data(INVITE, t=str(world.tenant_id), e=f"  {email} ", r="OPERATOR")
    member = invited["inviteMember"]
    assert member["__typename"] == "Member", member
    assert (member["email"], member["role"], member["via"], member["invited"]) == (
        email.lower(),
        "OPERATOR",
        "DIRECT",
        True,
    )
    with pg.transaction() as session:  # the invitation is a user with no identity yet
        user = session.scalar(select(User).where(User.email == email.lower()))
        assert user is not None
        assert user.oidc_subject is None
    listed = {(m["userId"], m["via"]): m for m in _members(gql, world.tenant_id)}
    assert listed[(member["userId"], "DIRECT")]["role"] == "OPERATOR"
    assert listed[(str(admin_id), "DIRECT")]["role"] == "ADMIN"
    # The world's user owns the MSP too: it acts here through the MSP as well.
    assert listed[(str(world.user_id), "MSP")]["mspId"] == str(world.msp_id)

    again = gql.data(INVITE, t=str(world.tenant_id), e=email.upper(), r="VIEWER")
    assert again["inviteMember"]["__typename"] == "AlreadyMember"
    for bad in (
        "not-an-address",
        "a@b",
        "two@@example.com",
        "sp ace@example.com",
        "a\nb@example.com",
    ):
        refused = gql.data(INVITE, t=str(world.tenant_id), e=bad, r="VIEWER")["inviteMember"]
        assert refused["__typename"] == "InvalidInput", (bad, refused)

    changed = gql.data(CHANGE, t=str(world.tenant_id), u=member["userId"], r="ADMIN")
    assert changed["changeMemberRole"] == {
        "__typename": "Member",
        "userId": member["userId"],
        "role": "ADMIN",
    }
    removed = gql.data(REMOVE, t=str(world.tenant_id), u=member["userId"])["removeMember"]
    assert (removed["__typename"], removed["role"]) == ("Member", "ADMIN")
    assert member["userId"] not in {m["userId"] for m in _members(gql, world.tenant_id)}

    acts = [
        (a["action"], a["target"], a["outcome"])
        for a in audit_log(gql, world.tenant_id)
        if a["action"].startswith("member.") and a["actorId"] == str(admin_id)
    ]
    assert acts == [
        ("member.invite", member["userId"], "ok"),
        ("member.role", member["userId"], "ok"),
        ("member.remove", member["userId"], "ok"),
    ]


def test_inviting_a_person_dockyard_knows_adds_a_membership_to_their_user(
    cloud: Cloud, pg: Database
) -> None:
    world, elsewhere = make_world(pg), make_world(pg)
    known_id, _ = add_user(pg, elsewhere.tenant_id, Role.VIEWER)
    with pg.transaction() as session:
        known = session.get(User, known_id)
        assert known is not None
        email = known.email
    gql = Gql(cloud.url, world.token)
    member = gql.data(INVITE, t=str(world.tenant_id), e=email, r="VIEWER")["inviteMember"]
    assert (member["__typename"], member["userId"]) == ("Member", str(known_id))
    (record,) = [a for a in audit_log(gql, world.tenant_id) if a["action"] == "member.invite"]
    assert record["detail"]["new_user"] is False
    # Their other tenant's membership is untouched, and invisible from here.
    assert [
        m["role"]
        for m in _members(Gql(cloud.url, elsewhere.token), elsewhere.tenant_id)
        if m["userId"] == str(known_id)
    ] == ["VIEWER"]


def test_a_viewer_changes_no_member_and_each_refusal_is_audited(cloud: Cloud, pg: Database) -> None:
    world = make_world(pg)
    viewer_id, token = add_user(pg, world.tenant_id, Role.VIEWER)
    other_id, _ = add_user(pg, world.tenant_id, Role.OPERATOR)
    gql = Gql(cloud.url, token)
    t = str(world.tenant_id)
    # A viewer sees who is here ...
    assert str(other_id) in {m["userId"] for m in _members(gql, world.tenant_id)}
    # ... and changes none of it.
    answers = [
        gql.data(INVITE, t=t, e=_email(), r="VIEWER")["inviteMember"],
        gql.data(CHANGE, t=t, u=str(other_id), r="ADMIN")["changeMemberRole"],
        gql.data(REMOVE, t=t, u=str(other_id))["removeMember"],
    ]
    assert [a["__typename"] for a in answers] == ["PermissionDenied"] * 3
    roles = {m["userId"]: m["role"] for m in _members(gql, world.tenant_id) if m["via"] == "DIRECT"}
    assert roles[str(other_id)] == "OPERATOR"
    assert refusals(Gql(cloud.url, world.token), world.tenant_id) == [
        ("member:add", str(viewer_id)),
        ("member:change", str(viewer_id)),
        ("member:change", str(viewer_id)),
    ]


def test_an_admin_cannot_make_or_touch_an_owner(cloud: Cloud, pg: Database) -> None:
    world = make_world(pg)
    _, token = add_user(pg, world.tenant_id, Role.ADMIN)
    gql = Gql(cloud.url, token)
    t = str(world.tenant_id)
    assert gql.data(INVITE, t=t, e=_email(), r="OWNER")["inviteMember"]["__typename"] == (
        "PermissionDenied"
    )
    for answer in (
        gql.data(CHANGE, t=t, u=str(world.user_id), r="VIEWER")["changeMemberRole"],
        gql.data(REMOVE, t=t, u=str(world.user_id))["removeMember"],
    ):
        assert answer["__typename"] == "PermissionDenied", answer


def test_another_tenants_ids_answer_as_missing_ones(cloud: Cloud, pg: Database) -> None:
    mine, theirs = make_world(pg), make_world(pg)
    their_member, _ = add_user(pg, theirs.tenant_id, Role.VIEWER)
    gql = Gql(cloud.url, mine.token)
    t = str(mine.tenant_id)
    assert (
        answers_as_missing(gql, MEMBERS, "t", theirs.tenant_id)["data"]["members"]["__typename"]
        == "TenantNotFound"
    )
    assert (
        answers_as_missing(gql, INVITE, "t", theirs.tenant_id, e=_email(), r="VIEWER")["data"][
            "inviteMember"
        ]["__typename"]
        == "TenantNotFound"
    )
    for query, field in ((CHANGE, "changeMemberRole"), (REMOVE, "removeMember")):
        variables: dict[str, Any] = {"r": "ADMIN"} if query is CHANGE else {}
        by_tenant = answers_as_missing(
            gql, query, "t", theirs.tenant_id, u=str(their_member), **variables
        )
        assert by_tenant["data"][field]["__typename"] == "TenantNotFound"
        # Their member, named in my tenant, is no member of mine: as a made-up user is not.
        by_user = answers_as_missing(gql, query, "u", their_member, t=t, **variables)
        assert by_user["data"][field]["__typename"] == "MemberNotFound"
    # Nothing of theirs changed.
    theirs_now = _members(Gql(cloud.url, theirs.token), theirs.tenant_id)
    assert {m["userId"]: m["role"] for m in theirs_now if m["via"] == "DIRECT"}[
        str(their_member)
    ] == "VIEWER"


def test_the_last_admin_or_owner_is_neither_removed_nor_demoted(cloud: Cloud, pg: Database) -> None:
    world = make_world(pg)  # its user is the child's only direct owner (and the MSP's)
    gql = Gql(cloud.url, world.token)
    t, me = str(world.tenant_id), str(world.user_id)
    for answer in (
        gql.data(REMOVE, t=t, u=me)["removeMember"],
        gql.data(CHANGE, t=t, u=me, r="OPERATOR")["changeMemberRole"],
    ):
        assert answer["__typename"] == "LastAdmin", answer
        assert "give another member the admin or owner role first" in answer["message"]
    assert gql.data(CHANGE, t=t, u=me, r="ADMIN")["changeMemberRole"]["role"] == "ADMIN"
    # With a second admin, the first may go.
    invited = gql.data(INVITE, t=t, e=_email(), r="ADMIN")["inviteMember"]
    assert invited["__typename"] == "Member"
    assert gql.data(REMOVE, t=t, u=me)["removeMember"]["__typename"] == "Member"
    # The MSP's grant still reaches the child; the remaining admin is now the last one.
    gone = gql.data(REMOVE, t=t, u=invited["userId"])["removeMember"]
    assert gone["__typename"] == "LastAdmin", gone


def test_an_invited_person_is_bound_at_first_sign_in_and_is_invited_no_more(
    cloud: Cloud, pg: Database
) -> None:
    """The sign-in's own binding step (`oidc.bind_user`, as /auth/callback runs it after
    the provider's ID token is checked; the provider itself is test_signin.py's)."""
    world = make_world(pg)
    gql = Gql(cloud.url, world.token)
    email = _email().lower()
    member = gql.data(INVITE, t=str(world.tenant_id), e=email, r="VIEWER")["inviteMember"]
    assert member["invited"] is True
    identity = oidc.Identity(
        issuer="https://idp.example",
        subject="s-1",
        email=email,
        email_verified=True,
        name="Ada Lovelace",
    )
    with pg.transaction() as session:
        assert oidc.bind_user(session, identity) == uuid.UUID(member["userId"])
    after = {m["userId"]: m for m in _members(gql, world.tenant_id) if m["via"] == "DIRECT"}
    assert after[member["userId"]]["invited"] is False
