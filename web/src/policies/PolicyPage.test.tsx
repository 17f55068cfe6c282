/** The policy page's form against the answers the cloud gives: its problems land at their
 * fields (and a group's at the group's first field). `fetch` is stubbed: a component test
 * has no cloud (tests/portal/test_portal_pages.py runs the page against a real one). */
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { cleanup, render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { MemoryRouter, Route, Routes } from "react-router";
import { afterEach, expect, it, vi } from "vitest";
import { PolicyPage } from "./PolicyPage";

afterEach(() => {
  cleanup();
  vi.unstubAllGlobals();
});

const DOC = { idle_days: 90, archive: { min_vm_gb: 1, max_vm_gb: 5 } };

function cloud(sent: unknown[]) {
  vi.stubGlobal(
    "fetch",
    vi.fn(async (_url: string, init: RequestInit) => {
      const body = JSON.parse(String(init.body)) as { query: string; variables: unknown };
      sent.push(body);
      const data = body.query.includes("PortalNewPolicyVersion")
        ? {
            newPolicyVersion: {
              __typename: "InvalidInput",
              message: "invalid vm-lifecycle policy: ...",
              problems: [
                { path: "idle_days", message: "Input should be greater than or equal to 1" },
                { path: "archive", message: "min_vm_gb is not below max_vm_gb" },
              ],
            },
          }
        : body.query.includes("PortalPolicyTargets")
          ? {
              sites: { __typename: "SiteConnection", edges: [] },
              agents: { __typename: "AgentConnection", edges: [] },
            }
          : {
              policy: {
                __typename: "Policy",
                id: "p1",
                name: "Idle VMs",
                kind: "vm-lifecycle",
                currentVersion: 1,
                createdAt: "2026-12-01T10:00:00Z",
              },
              policyVersions: {
                __typename: "PolicyVersionConnection",
                edges: [{ node: { version: 1, document: DOC, createdAt: "2026-12-01T10:00:00Z" } }],
              },
              policyAssignments: { __typename: "PolicyAssignmentConnection", edges: [] },
            };
      return new Response(JSON.stringify({ data }), { status: 200 });
    }),
  );
}

it("says each of the cloud's problems at its field, and sends the document typed", async () => {
  const sent: { variables: { document?: unknown } }[] = [];
  cloud(sent);
  const client = new QueryClient({ defaultOptions: { queries: { retry: false } } });
  render(
    <QueryClientProvider client={client}>
      <MemoryRouter initialEntries={["/t/t1/policies/p1"]}>
        <Routes>
          <Route path="/t/:tenantId/policies/:policyId" element={<PolicyPage />} />
        </Routes>
      </MemoryRouter>
    </QueryClientProvider>,
  );
  const user = userEvent.setup();
  const idle = await screen.findByLabelText("idle days");
  await user.clear(idle);
  await user.type(idle, "0");
  await user.click(screen.getByRole("button", { name: "Save as version 2" }));
  const said = await screen.findByText("Input should be greater than or equal to 1");
  expect(idle).toHaveAttribute("aria-invalid", "true");
  expect(idle.getAttribute("aria-describedby")).toBe(said.id);
  const first = screen.getByLabelText("archive › min vm gb");
  expect(first).toHaveAccessibleDescription("archive: min_vm_gb is not below max_vm_gb");
  expect(screen.getByRole("alert")).toHaveTextContent("2 values need mending");
  const saved = sent.find((b) => b.variables.document !== undefined);
  expect(saved?.variables.document).toEqual({ ...DOC, idle_days: 0 });
});
