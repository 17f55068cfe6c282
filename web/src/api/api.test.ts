import { describe as group, expect, it } from "vitest";
import { readCookie } from "./cookies";
import { ApiError, httpError, pick } from "./errors";
import { loginUrl } from "./auth";

group("readCookie", () => {
  it("finds the CSRF cookie among others and decodes it", () => {
    expect(readCookie("dockyard_csrf", "a=1; dockyard_csrf=x%2By; b=2")).toBe("x+y");
  });
  it("answers null when absent, and never matches a name's suffix", () => {
    expect(readCookie("dockyard_csrf", "not_dockyard_csrf=1")).toBeNull();
    expect(readCookie("dockyard_csrf", "")).toBeNull();
  });
});

group("pick", () => {
  it("returns the expected member of a union", () => {
    const v = { __typename: "Agent" as const, id: "1" };
    expect(pick(v, "Agent").id).toBe("1");
  });
  it("throws the error member's own sentence", () => {
    const v = { __typename: "TenantNotFound" as const, message: "No such tenant." } as
      | { __typename: "Agent"; id: string }
      | { __typename: "TenantNotFound"; message: string };
    expect(() => pick(v, "Agent")).toThrow("No such tenant.");
  });
});

group("httpError", () => {
  it("says a 401 is an ended session, so the portal shows sign-in", () => {
    const e = httpError(401);
    expect(e).toBeInstanceOf(ApiError);
    expect(e.kind).toBe("signed-out");
  });
  it("puts the status in words for a server failure", () => {
    expect(httpError(502).message).toMatch(/failed to answer \(502\)/);
  });
});

group("loginUrl", () => {
  it("carries a portal path back", () => {
    expect(loginUrl("/portal/t/1/vms")).toBe("/auth/login?return_to=%2Fportal%2Ft%2F1%2Fvms");
  });
  it("never sends the user back to another site", () => {
    expect(loginUrl("https://evil.example/")).toBe("/auth/login?return_to=%2Fportal%2F");
    expect(loginUrl("//evil.example/portal/")).toBe("/auth/login?return_to=%2Fportal%2F");
  });
});
