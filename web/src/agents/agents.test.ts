import { describe, expect, it } from "vitest";
import { QUIET_AFTER_MS, agentState, ago, countByState } from "./agentState";
import { dockLine, shellQuote } from "./dockLine";

const now = new Date("2026-12-04T12:00:00Z");
const before = (ms: number) => new Date(now.getTime() - ms).toISOString();

describe("agentState", () => {
  it("says revoked before anything else", () => {
    expect(agentState({ revokedAt: before(1), lastSeenAt: before(1) }, now)).toBe("revoked");
  });
  it("says never seen without a last-seen time", () => {
    expect(agentState({ lastSeenAt: null }, now)).toBe("never-seen");
  });
  it("is online up to the quiet threshold, quiet after it", () => {
    expect(agentState({ lastSeenAt: before(QUIET_AFTER_MS) }, now)).toBe("online");
    expect(agentState({ lastSeenAt: before(QUIET_AFTER_MS + 1000) }, now)).toBe("quiet");
  });
  it("counts each state", () => {
    const counts = countByState(
      [{ lastSeenAt: before(1000) }, { lastSeenAt: null }, { revokedAt: before(1) }],
      now,
    );
    expect(counts).toEqual({ online: 1, quiet: 0, "never-seen": 1, revoked: 1 });
  });
});

describe("ago", () => {
  it("words an age in its largest unit", () => {
    expect(ago(before(30_000), now)).toBe("just now");
    expect(ago(before(60_000), now)).toBe("1 minute ago");
    expect(ago(before(3 * 3600_000), now)).toBe("3 hours ago");
    expect(ago(before(2 * 86400_000), now)).toBe("2 days ago");
    expect(ago(null, now)).toBe("never");
  });
});

describe("dockLine", () => {
  it("writes the token to a file and docks with --token-file", () => {
    const line = dockLine("https://cloud.example", "dy_enrol_abc", "CONFIG");
    expect(line).toContain("printf '%s' 'dy_enrol_abc' > dockyard-enrol.token");
    expect(line).toContain(
      "dockyard-agent dock 'https://cloud.example' --token-file dockyard-enrol.token",
    );
    expect(line).not.toContain("--max-flow");
  });
  it("passes a wider flow ceiling on", () => {
    expect(dockLine("https://c", "t", "METADATA")).toContain("--max-flow metadata");
  });
  it("quotes a quote so the shell cannot be broken out of", () => {
    expect(shellQuote("a'b")).toBe("'a'\\''b'");
  });
});
