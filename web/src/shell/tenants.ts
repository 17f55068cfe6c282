/** The tenant switcher's entries from /auth/me's memberships: one per tenant, even when the
 * user holds a role there directly and another through its MSP (React needs one key per
 * option, and a person needs one line per tenant), in the order the cloud gave them. */
import type { Membership } from "../api/auth";

export interface TenantChoice {
  tenantId: string;
  label: string;
}

function grant(m: Membership): string {
  const role = m.role.toLowerCase();
  return m.via === "msp" ? `${role} via MSP` : role;
}

export function tenantChoices(memberships: readonly Membership[]): TenantChoice[] {
  const byTenant = new Map<string, { name: string; grants: string[]; archived: boolean }>();
  for (const m of memberships) {
    const seen = byTenant.get(m.tenantId);
    if (seen) {
      if (!seen.grants.includes(grant(m))) seen.grants.push(grant(m));
      seen.archived ||= Boolean(m.archived);
    } else {
      const archived = Boolean(m.archived);
      byTenant.set(m.tenantId, { name: m.tenantName, grants: [grant(m)], archived });
    }
  }
  return [...byTenant].map(([tenantId, t]) => ({
    tenantId,
    label: `${t.name} (${t.grants.join(", ")}${t.archived ? ", archived" : ""})`,
  }));
}
