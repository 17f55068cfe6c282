import { describe as group, expect, it } from "vitest";
import { SIGNED_OUT, liveUrl, reopens, staleKeys } from "./live";

group("liveUrl", () => {
  it("is this page's own host, wss: under https: and ws: under http:", () => {
    expect(liveUrl({ protocol: "https:", host: "cloud.example:8443" })).toBe(
      "wss://cloud.example:8443/graphql",
    );
    expect(liveUrl({ protocol: "http:", host: "127.0.0.1:8080" })).toBe(
      "ws://127.0.0.1:8080/graphql",
    );
  });
});

group("reopens", () => {
  it("reopens a lost socket, but not one the cloud closed because the session ended", () => {
    expect(reopens({ code: 1006 })).toBe(true);
    expect(reopens({ code: 1012 })).toBe(true);
    expect(reopens(new Error("network"))).toBe(true);
    expect(reopens({ code: SIGNED_OUT })).toBe(false);
  });
});

group("staleKeys", () => {
  it("reads again the agents on an agent's change, the jobs on a job's, both on RESYNC", () => {
    const dashboard = ["dashboard", "t1"];
    expect(staleKeys("t1", { kind: "AGENT" })).toEqual([["agents", "t1"], dashboard]);
    expect(staleKeys("t1", { kind: "JOB" })).toEqual([["jobs", "t1"], dashboard]);
    expect(staleKeys("t1", { kind: "RESYNC" })).toEqual([
      ["agents", "t1"],
      ["jobs", "t1"],
      dashboard,
    ]);
  });
});
