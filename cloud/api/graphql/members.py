"""A tenant's members and invitations: the types, queries and mutations."""

from datetime import datetime
from typing import Annotated

import strawberry
from strawberry.types import Info

from dockyard.cloud.domain import members
from dockyard.cloud.domain.permissions import Permission as P
from dockyard.cloud.domain.permissions import Role

from . import errors, relay
from .context import Context
from .errors import (
    Error,
    InvalidInput,
    MemberNotFound,
    PermissionDenied,
    TenantArchived,
    TenantNotFound,
)
from .fields import mutation, parse_id, query
from .tenants import GrantVia


@strawberry.type(description="The person holds a role in this tenant already: change it instead.")
class AlreadyMember(Error):
    pass


@strawberry.type(
    description="The tenant would be left without an admin or owner of its own; give another "
    "member the role first."
)
class LastAdmin(Error):
    pass


errors.MATCHES.update(
    {
        AlreadyMember: lambda err: isinstance(err, members.AlreadyMember),
        LastAdmin: lambda err: isinstance(err, members.LastManager),
    }
)


@strawberry.type(description="A person's grant in a tenant, held directly or through its MSP.")
class Member:
    user_id: strawberry.ID
    email: str
    name: str
    role: Role
    via: GrantVia
    msp_id: strawberry.ID | None = strawberry.field(
        description="The MSP whose membership grants this one; null for a direct grant."
    )
    invited: bool = strawberry.field(
        description="Invited and not signed in yet: the first sign-in with this e-mail binds it."
    )
    joined_at: datetime = strawberry.field(description="When the person was first known.")

    @classmethod
    def of(cls, m: members.Member) -> "Member":
        return cls(
            user_id=strawberry.ID(str(m.user.id)),
            email=m.user.email,
            name=m.user.name,
            role=m.role,
            via=GrantVia.DIRECT if m.direct else GrantVia.MSP,
            msp_id=strawberry.ID(str(m.msp_id)) if m.msp_id else None,
            invited=m.invited,
            joined_at=m.user.created_at,
        )


MemberConnection = relay.Connection[Member]

MembersResult = Annotated[
    MemberConnection | TenantNotFound | PermissionDenied | InvalidInput,
    strawberry.union("MembersResult"),
]
InviteMemberResult = Annotated[
    Member | TenantNotFound | PermissionDenied | TenantArchived | AlreadyMember | InvalidInput,
    strawberry.union("InviteMemberResult"),
]
MemberChange = (
    Member
    | TenantNotFound
    | MemberNotFound
    | PermissionDenied
    | TenantArchived
    | LastAdmin
    | InvalidInput
)
ChangeMemberRoleResult = Annotated[MemberChange, strawberry.union("ChangeMemberRoleResult")]
RemoveMemberResult = Annotated[MemberChange, strawberry.union("RemoveMemberResult")]


@strawberry.type
class MemberQuery:
    @query(MembersResult)
    async def members(
        self,
        info: Info[Context, None],
        tenant_id: strawberry.ID,
        first: int = relay.FIRST,
        after: str | None = None,
    ) -> MemberConnection:
        """Everyone with a role here: the tenant's own members and its MSP's."""
        tid = parse_id(tenant_id, "tenantId")
        page = await info.context.read(
            lambda ctx: members.listing(ctx, tid, relay.request(first, after))
        )
        return relay.connection(page, Member.of, after)


@strawberry.type
class MemberMutation:
    @mutation(InviteMemberResult, P.MEMBER_ADD, P.MEMBER_ADD_OWNER)
    async def invite_member(
        self, info: Info[Context, None], tenant_id: strawberry.ID, email: str, role: Role
    ) -> Member:
        """A role for the person at `email`; one new to Dockyard is invited, and their first
        sign-in with that address binds it."""
        tid = parse_id(tenant_id, "tenantId")
        row = await info.context.write(lambda ctx: members.invite(ctx, tid, email, role))
        return Member.of(row)

    @mutation(ChangeMemberRoleResult, P.MEMBER_CHANGE, P.MEMBER_CHANGE_OWNER)
    async def change_member_role(
        self,
        info: Info[Context, None],
        tenant_id: strawberry.ID,
        user_id: strawberry.ID,
        role: Role,
    ) -> Member:
        tid, uid = parse_id(tenant_id, "tenantId"), parse_id(user_id, "userId")
        row = await info.context.write(lambda ctx: members.change_role(ctx, tid, uid, role))
        return Member.of(row)

    @mutation(RemoveMemberResult, P.MEMBER_CHANGE, P.MEMBER_CHANGE_OWNER)
    async def remove_member(
        self, info: Info[Context, None], tenant_id: strawberry.ID, user_id: strawberry.ID
    ) -> Member:
        """Ends the membership (the user stays, for their other tenants); answers it as it was."""
        tid, uid = parse_id(tenant_id, "tenantId"), parse_id(user_id, "userId")
        row = await info.context.write(lambda ctx: members.remove(ctx, tid, uid))
        return Member.of(row)
