/** The sign-in page against the three answers /auth/config can give. `fetch` is stubbed: a
 * component test has no cloud (the browser test in tests/portal/ runs against a real one). */
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { cleanup, render, screen } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";
import { SignIn } from "./SignIn";

afterEach(() => {
  cleanup();
  vi.unstubAllGlobals();
});

function answer(status: number, body?: unknown) {
  vi.stubGlobal(
    "fetch",
    vi.fn(async () => new Response(body === undefined ? "" : JSON.stringify(body), { status })),
  );
}

function show() {
  const client = new QueryClient({ defaultOptions: { queries: { retry: false } } });
  render(
    <QueryClientProvider client={client}>
      <SignIn returnTo="/portal/t/1/vms" />
    </QueryClientProvider>,
  );
}

describe("SignIn", () => {
  it("offers the identity provider and a password form when both are on", async () => {
    answer(200, { oidc: true, password: true });
    show();
    const link = await screen.findByRole("link", { name: /identity provider/ });
    expect(link.getAttribute("href")).toBe("/auth/login?return_to=%2Fportal%2Ft%2F1%2Fvms");
    expect(screen.getByLabelText("Email")).toBeTruthy();
    expect(screen.getByLabelText("Password")).toBeTruthy();
  });

  it("shows no password form when only OIDC is on", async () => {
    answer(200, { oidc: true, password: false });
    show();
    await screen.findByRole("link", { name: /identity provider/ });
    expect(screen.queryByLabelText("Password")).toBeNull();
  });

  it("says in words that this cloud has no sign-in when /auth/config is 404", async () => {
    answer(404);
    show();
    const alert = await screen.findByRole("alert");
    expect(alert.textContent).toContain("offers no sign-in for the portal yet");
  });

  it("words a server failure", async () => {
    answer(500);
    show();
    const alert = await screen.findByRole("alert");
    expect(alert.textContent).toContain("failed to answer (500)");
  });
});
