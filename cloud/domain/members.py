"""A tenant's members: who holds a role in it, directly or through its MSP; inviting a person
by e-mail, changing a role, removing a member.

An invitation is a users row with the e-mail and no OpenID subject yet: the person's first
sign-in binds it (`cloud/auth/oidc.py`). A tenant that has an admin or an owner of its own
always keeps one: the last is neither removed nor demoted, so no one locks the customer out
of its own settings (an MSP's grant never widens its data flow).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from dockyard.cloud.store.models import Membership, Tenant, User
from dockyard.cloud.store.tenancy import unscoped

from . import audit, text
from .context import Ctx
from .errors import Conflict, Invalid, NotFound
from .pages import Page, PageRequest, keyset
from .permissions import Permission as P
from .permissions import Role

MANAGERS = frozenset({Role.ADMIN, Role.OWNER})
"""The roles a tenant keeps at least one of, once it has one."""

_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")
MAX_EMAIL = 320


class AlreadyMember(Conflict):
    """The person holds a role in this tenant already: change it instead."""

    code = "already_member"


class LastManager(Conflict):
    """The act would leave the tenant without an admin or an owner of its own."""

    code = "last_manager"


@dataclass(frozen=True)
class Member:
    """One grant in the tenant: a membership of it (`direct`) or of its MSP."""

    user: User
    role: Role
    direct: bool
    msp_id: uuid.UUID | None

    @property
    def invited(self) -> bool:
        """Invited and not signed in yet: no OpenID identity and no local password."""
        return self.user.oidc_subject is None and self.user.password_hash is None


def email_address(value: str) -> str:
    """An e-mail address, lower-cased, or `Invalid` saying what is wrong with it."""
    email = text.plain("email", value.strip()).lower()
    if len(email) > MAX_EMAIL or not _EMAIL.fullmatch(email):
        raise Invalid(f"email must be an address like name@example.com, not {value[:80]!r}")
    return email


def listing(ctx: Ctx, tenant_id: uuid.UUID, request: PageRequest) -> Page[Member]:
    """The tenant's members and its MSP's, oldest grant first. The MSP's members are read
    across the scope on purpose: a customer's admin sees who can act in its tenant."""
    ctx.principal.require(tenant_id, P.MEMBER_READ)
    tenant = ctx.session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound("tenant")
    holders = [tenant_id] if tenant.parent_id is None else [tenant_id, tenant.parent_id]
    stmt = select(Membership).where(Membership.tenant_id.in_(holders))
    with unscoped(ctx.session, "a tenant's members include its MSP's, who act in it"):
        page = keyset(ctx.session, stmt, Membership.created_at, request)
        users = {
            u.id: u
            for u in ctx.session.scalars(
                select(User).where(User.id.in_([m.user_id for m in page.items]))
            )
        }
    return page.map(
        lambda m: Member(
            users[m.user_id],
            Role(m.role),
            m.tenant_id == tenant_id,
            None if m.tenant_id == tenant_id else m.tenant_id,
        )
    )


def invite(ctx: Ctx, tenant_id: uuid.UUID, email: str, role: Role) -> Member:
    """A membership for the person at `email`, made a user (invited) if new to Dockyard."""
    ctx.principal.require(tenant_id, P.MEMBER_ADD_OWNER if role is Role.OWNER else P.MEMBER_ADD)
    address = email_address(email)
    user = ctx.session.scalar(select(User).where(User.email == address))
    new_user = user is None
    already = AlreadyMember(f"{address} is a member of this tenant already; change the role")
    if user is not None and _membership(ctx, tenant_id, user.id) is not None:
        raise already
    try:
        # The same person invited twice at once: the unique e-mail or membership decides.
        with ctx.session.begin_nested():
            if user is None:
                # No name yet: the first sign-in takes the one the identity provider gives.
                user = User(email=address, name="", created_at=ctx.now())
                ctx.session.add(user)
                ctx.session.flush()
            ctx.session.add(
                Membership(
                    tenant_id=tenant_id, user_id=user.id, role=role.value, created_at=ctx.now()
                )
            )
    except IntegrityError:
        raise already from None
    audit.record(
        ctx,
        tenant_id,
        "member.invite",
        target=str(user.id),
        email=address,
        role=role,
        new_user=new_user,
    )
    return Member(user, role, True, None)


def change_role(ctx: Ctx, tenant_id: uuid.UUID, user_id: uuid.UUID, role: Role) -> Member:
    membership = _for_change(ctx, tenant_id, user_id, role)
    old = Role(membership.role)
    if old is not role:
        if old in MANAGERS and role not in MANAGERS:
            _keep_a_manager(ctx, tenant_id, user_id, "demote")
        membership.role = role.value
        audit.record(ctx, tenant_id, "member.role", target=str(user_id), old=old, new=role)
    return Member(_user(ctx, user_id), role, True, None)


def remove(ctx: Ctx, tenant_id: uuid.UUID, user_id: uuid.UUID) -> Member:
    """Ends the person's membership of the tenant (not its grants through an MSP, and not
    the user: they may belong elsewhere). Their tokens limited to it stop working too."""
    membership = _for_change(ctx, tenant_id, user_id, None)
    role = Role(membership.role)
    if role in MANAGERS:
        _keep_a_manager(ctx, tenant_id, user_id, "remove")
    ctx.session.delete(membership)
    ctx.session.flush()
    audit.record(ctx, tenant_id, "member.remove", target=str(user_id), role=role)
    return Member(_user(ctx, user_id), role, True, None)


def _for_change(ctx: Ctx, tenant_id: uuid.UUID, user_id: uuid.UUID, new: Role | None) -> Membership:
    """The direct membership to change, its permission checked: an owner's, or making one,
    needs the owner's permission (which the rank order makes enough on its own). A grant
    through the MSP is changed in the MSP."""
    ctx.principal.require(tenant_id, P.MEMBER_READ)
    membership = _membership(ctx, tenant_id, user_id)
    if membership is None:
        raise NotFound("member")
    owner = Role.OWNER in (Role(membership.role), new)
    ctx.principal.require(tenant_id, P.MEMBER_CHANGE_OWNER if owner else P.MEMBER_CHANGE)
    return membership


def _keep_a_manager(ctx: Ctx, tenant_id: uuid.UUID, user_id: uuid.UUID, act: str) -> None:
    """Refuses when no other admin or owner remains. The tenant's manager rows are locked,
    so two admins removing each other at once cannot both succeed."""
    managers = ctx.session.scalars(
        select(Membership.user_id)
        .where(
            Membership.tenant_id == tenant_id,
            Membership.role.in_([r.value for r in MANAGERS]),
        )
        .with_for_update()
    ).all()
    if not set(managers) - {user_id}:
        raise LastManager(
            f"cannot {act} the last admin or owner of this tenant: give another member the "
            "admin or owner role first"
        )


def _membership(ctx: Ctx, tenant_id: uuid.UUID, user_id: uuid.UUID) -> Membership | None:
    return ctx.session.scalar(
        select(Membership).where(Membership.tenant_id == tenant_id, Membership.user_id == user_id)
    )


def _user(ctx: Ctx, user_id: uuid.UUID) -> User:
    user = ctx.session.get(User, user_id)
    assert user is not None  # a membership's user: the foreign key holds it
    return user
