/** The audit log's filters as the page's address holds them (`?action=policy.&outcome=refused`),
 * so a filtered view can be bookmarked and shared, and as the query's variables. */
import type { ActorKind } from "../gql/graphql";

export interface AuditFilters {
  action: string;
  outcome: string;
  actorKind: ActorKind | "";
}

const KINDS: readonly string[] = ["USER", "AGENT", "SYSTEM", "ANONYMOUS"];

export function fromSearch(params: URLSearchParams): AuditFilters {
  const kind = (params.get("actor") ?? "").toUpperCase();
  return {
    action: (params.get("action") ?? "").trim(),
    outcome: (params.get("outcome") ?? "").trim(),
    actorKind: KINDS.includes(kind) ? (kind as ActorKind) : "",
  };
}

export function toSearch(f: AuditFilters): URLSearchParams {
  const out = new URLSearchParams();
  if (f.action.trim()) out.set("action", f.action.trim());
  if (f.outcome.trim()) out.set("outcome", f.outcome.trim());
  if (f.actorKind) out.set("actor", f.actorKind.toLowerCase());
  return out;
}

/** The variables: an empty filter is none at all, not a match for the empty string. */
export function variables(f: AuditFilters) {
  return {
    action: f.action.trim() || null,
    outcome: f.outcome.trim() || null,
    actorKind: f.actorKind || null,
  };
}

export function isFiltered(f: AuditFilters): boolean {
  return Boolean(f.action.trim() || f.outcome.trim() || f.actorKind);
}
