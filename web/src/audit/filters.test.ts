import { describe, expect, it } from "vitest";
import { fromSearch, toSearch, variables } from "./filters";

describe("audit filters", () => {
  it("round-trip through the address, dropping what is empty", () => {
    const f = { action: " policy. ", outcome: "refused", actorKind: "USER" as const };
    const search = toSearch(f);
    expect(search.toString()).toBe("action=policy.&outcome=refused&actor=user");
    expect(fromSearch(search)).toEqual({ action: "policy.", outcome: "refused", actorKind: "USER" });
  });
  it("ignore an actor kind the API does not have, and send no empty filter", () => {
    const f = fromSearch(new URLSearchParams("actor=robot&action="));
    expect(f.actorKind).toBe("");
    expect(variables(f)).toEqual({ action: null, outcome: null, actorKind: null });
  });
});
