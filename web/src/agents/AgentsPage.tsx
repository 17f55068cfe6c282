/** Agents: every agent of the tenant with its derived state, last seen, modules and flow
 * ceiling, a chart of how many are in each state, revocation, and docking a new one. */
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import {
  createColumnHelper,
  flexRender,
  getCoreRowModel,
  useReactTable,
} from "@tanstack/react-table";
import { Suspense, lazy, useMemo, useState } from "react";
import { useParams } from "react-router";
import { pick } from "../api/errors";
import { request } from "../api/graphql";
import { staleKeys, useTenantChanges } from "../api/live";
import type { PortalAgentsQuery } from "../gql/graphql";
import { ConfirmFor } from "../ui/ConfirmDialog";
import { useTitle } from "../ui/title";
import { EmptyState, ErrorNote, Loading } from "../ui/Notice";
import { EnrolPanel } from "./EnrolPanel";
import { STATE_LABEL, agentState, ago, countByState } from "./agentState";
import { AgentsQuery, RevokeAgentMutation } from "./queries";

type AgentsResult = Extract<PortalAgentsQuery["agents"], { __typename: "AgentConnection" }>;
type AgentRow = AgentsResult["edges"][number]["node"];

const column = createColumnHelper<AgentRow>();
const AgentsChart = lazy(() => import("./AgentsChart"));
// The table's data must keep its identity between renders (a new [] each time loops).
const NONE: AgentRow[] = [];

export function AgentsPage() {
  const { tenantId = "" } = useParams();
  const client = useQueryClient();
  useTitle("Agents");
  const [revoking, setRevoking] = useState<AgentRow | null>(null);
  const agents = useQuery({
    queryKey: ["agents", tenantId],
    queryFn: async () =>
      pick((await request(AgentsQuery, { tenantId })).agents, "AgentConnection").edges.map(
        (e) => e.node,
      ),
    // Also polled: the state moves from online to quiet with the clock alone, and the list
    // stays current where the live socket cannot be opened.
    refetchInterval: 30_000,
  });
  // An agent docking, revoked or changed on any replica shows at once, read again here.
  useTenantChanges(tenantId, (change) => {
    for (const queryKey of staleKeys(tenantId, change)) {
      void client.invalidateQueries({ queryKey });
    }
  });
  const revoke = useMutation({
    mutationFn: async (id: string) =>
      pick((await request(RevokeAgentMutation, { id })).revokeAgent, "Agent"),
    onSettled: () => client.invalidateQueries({ queryKey: ["agents", tenantId] }),
  });
  const now = new Date(agents.dataUpdatedAt || Date.now());

  const columns = useMemo(
    () => [
      column.accessor("name", { header: "Name" }),
      column.display({
        id: "state",
        header: "State",
        cell: (c) => {
          const state = agentState(c.row.original, now);
          return <span className={`badge state-${state}`}>{STATE_LABEL[state]}</span>;
        },
      }),
      column.accessor("lastSeenAt", {
        header: "Last seen",
        cell: (c) => (
          <time dateTime={c.getValue() ?? undefined} title={c.getValue() ?? "never"}>
            {ago(c.getValue(), now)}
          </time>
        ),
      }),
      column.accessor("site", { header: "Site", cell: (c) => c.getValue()?.name ?? "—" }),
      column.accessor("modules", {
        header: "Modules",
        cell: (c) =>
          c.getValue().length === 0
            ? "none"
            : c
                .getValue()
                .map((m) => `${m.name} ${m.version}`)
                .join(", "),
      }),
      column.accessor("maxFlow", { header: "Flow mode", cell: (c) => c.getValue().toLowerCase() }),
      column.display({
        id: "actions",
        header: () => <span className="sr-only">Actions</span>,
        cell: (c) =>
          c.row.original.revokedAt ? null : (
            <button
              type="button"
              className="danger"
              aria-label={`Revoke ${c.row.original.name}`}
              onClick={() => setRevoking(c.row.original)}
            >
              Revoke
            </button>
          ),
      }),
    ],
    // `now` moves with each fetch; the columns read it.
    [agents.dataUpdatedAt],
  );
  const table = useReactTable({
    data: agents.data ?? NONE,
    columns,
    getCoreRowModel: getCoreRowModel(),
  });
  const counts = countByState(agents.data ?? [], now);
  const chart = (Object.keys(counts) as (keyof typeof counts)[]).map((k) => ({
    state: STATE_LABEL[k],
    agents: counts[k],
  }));

  return (
    <>
      <h1>Agents</h1>
      {agents.isPending ? <Loading what="agents" /> : null}
      {agents.isError ? <ErrorNote error={agents.error} retry={() => void agents.refetch()} /> : null}
      {revoke.isError ? <ErrorNote error={revoke.error} /> : null}
      {agents.data && agents.data.length === 0 ? (
        <EmptyState title="No agent has docked yet">
          <p>
            Create an enrolment token below, then run the command it shows on a machine at the
            site. The agent appears here once it has docked.
          </p>
        </EmptyState>
      ) : null}
      {agents.data && agents.data.length > 0 ? (
        <div className="split">
          <div className="table-wrap">
            <table>
              <caption className="sr-only">Agents of this tenant</caption>
              <thead>
                {table.getHeaderGroups().map((g) => (
                  <tr key={g.id}>
                    {g.headers.map((h) => (
                      <th key={h.id} scope="col">
                        {flexRender(h.column.columnDef.header, h.getContext())}
                      </th>
                    ))}
                  </tr>
                ))}
              </thead>
              <tbody>
                {table.getRowModel().rows.map((r) => (
                  <tr key={r.id}>
                    {r.getVisibleCells().map((c) => (
                      <td key={c.id}>{flexRender(c.column.columnDef.cell, c.getContext())}</td>
                    ))}
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          <figure className="chart" aria-label="Agents by state">
            <figcaption>Agents by state</figcaption>
            <Suspense fallback={<Loading what="the chart" />}>
              <AgentsChart data={chart} />
            </Suspense>
          </figure>
        </div>
      ) : null}
      <EnrolPanel tenantId={tenantId} />
      <ConfirmFor
        subject={revoking}
        title={(a) => `Revoke ${a.name}?`}
        body="The agent takes no more commands and cannot dock again with its key. Its modules go on standalone at the site."
        confirmLabel="Revoke agent"
        onConfirm={(a) => revoke.mutate(a.id)}
        onClose={() => setRevoking(null)}
      />
    </>
  );
}
