/** What the Agents table says of an agent: its own fields do not name a state, so the portal
 * derives one from revocation and the last time the cloud heard from it. */
export type AgentState = "revoked" | "never-seen" | "online" | "quiet";

/** An agent long-polls; silence past this means it is down or cut off. */
export const QUIET_AFTER_MS = 5 * 60 * 1000;

export interface AgentTimes {
  revokedAt?: string | null;
  lastSeenAt?: string | null;
}

export function agentState(agent: AgentTimes, now: Date): AgentState {
  if (agent.revokedAt) return "revoked";
  if (!agent.lastSeenAt) return "never-seen";
  const seen = Date.parse(agent.lastSeenAt);
  if (Number.isNaN(seen)) return "never-seen";
  return now.getTime() - seen <= QUIET_AFTER_MS ? "online" : "quiet";
}

export const STATE_LABEL: Record<AgentState, string> = {
  revoked: "Revoked",
  "never-seen": "Never seen",
  online: "Online",
  quiet: "Quiet",
};

/** "3 minutes ago", "2 days ago": the age of a time, for a table cell. */
export function ago(iso: string | null | undefined, now: Date): string {
  if (!iso) return "never";
  const then = Date.parse(iso);
  if (Number.isNaN(then)) return "unknown";
  const s = Math.max(0, Math.round((now.getTime() - then) / 1000));
  if (s < 60) return "just now";
  const units: [number, string][] = [
    [86400, "day"],
    [3600, "hour"],
    [60, "minute"],
  ];
  for (const [size, name] of units) {
    if (s >= size) {
      const n = Math.floor(s / size);
      return `${n} ${name}${n === 1 ? "" : "s"} ago`;
    }
  }
  return "just now";
}

export function countByState(agents: AgentTimes[], now: Date): Record<AgentState, number> {
  const counts: Record<AgentState, number> = { online: 0, quiet: 0, "never-seen": 0, revoked: 0 };
  for (const a of agents) counts[agentState(a, now)] += 1;
  return counts;
}
