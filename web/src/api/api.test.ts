import { afterEach, describe as group, expect, it, vi } from "vitest";
import { readCookie } from "./cookies";
import { ApiError, httpError, pick } from "./errors";
import { loginUrl, passwordSignIn } from "./auth";

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

group("passwordSignIn", () => {
  afterEach(() => vi.unstubAllGlobals());
  it("posts JSON, the only body the cloud's /auth/password takes (else 415)", async () => {
    const fetch = vi.fn(async () => new Response("{}", { status: 200 }));
    vi.stubGlobal("fetch", fetch);
    await passwordSignIn("pat@example.com", "correct horse battery");
    const [path, init] = fetch.mock.calls[0] as unknown as [string, RequestInit];
    expect(path).toBe("/auth/password");
    expect((init.headers as Record<string, string>)["Content-Type"]).toBe("application/json");
    expect(JSON.parse(String(init.body))).toEqual({
      email: "pat@example.com",
      password: "correct horse battery",
    });
  });
});
