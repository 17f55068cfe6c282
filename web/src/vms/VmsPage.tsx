/** VMs: the tenant's VM catalog, a page at a time over the GraphQL connection (filters go to
 * the server, so thousands of rows never load at once), sortable within the page, with an icon
 * for archived VMs and an action menu per row (its button, or a right-click on the row). */
import { keepPreviousData, useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import {
  createColumnHelper,
  flexRender,
  getCoreRowModel,
  getSortedRowModel,
  useReactTable,
  type SortingState,
} from "@tanstack/react-table";
import { useMemo, useState, type FormEvent } from "react";
import { Link, useParams } from "react-router";
import { ApiError, pick } from "../api/errors";
import { request } from "../api/graphql";
import type { IdleState, PortalVmsQuery } from "../gql/graphql";
import { ConfirmFor } from "../ui/ConfirmDialog";
import { useTitle } from "../ui/title";
import { EmptyState, ErrorNote, Loading } from "../ui/Notice";
import { ActionMenu } from "./ActionMenu";
import { archiveSummary } from "./bytes";
import { ArchiveVmMutation, PowerVmMutation, RestoreVmMutation, VmsQuery } from "./queries";
import { LIFE_LABEL, type VmAction } from "./vmActions";

type VmsResult = Extract<PortalVmsQuery["vms"], { __typename: "VmConnection" }>;
type VmRow = VmsResult["edges"][number]["node"];

export interface VmFilters {
  powerState: string;
  host: string;
  owner: string;
  idleState: IdleState | "";
}

const NO_FILTERS: VmFilters = { powerState: "", host: "", owner: "", idleState: "" };
const IDLE_STATES: IdleState[] = ["ACTIVE", "IDLE", "UNKNOWN", "EXCLUDED", "MAINTENANCE"];
const PAGE_SIZES = [25, 50, 100];

/** The newest sighting: the one that speaks for the VM (`sightings` is oldest first). */
function newest(vm: VmRow) {
  return vm.sightings[vm.sightings.length - 1];
}

const column = createColumnHelper<VmRow>();

export function VmsPage() {
  const { tenantId = "" } = useParams();
  const client = useQueryClient();
  useTitle("VMs");
  const [filters, setFilters] = useState<VmFilters>(NO_FILTERS);
  const [pageSize, setPageSize] = useState(50);
  // The cursor each page after the first starts from; the last one is the page shown.
  const [cursors, setCursors] = useState<string[]>([]);
  const [sorting, setSorting] = useState<SortingState>([]);
  const [menuAt, setMenuAt] = useState<{ id: string; x: number; y: number } | null>(null);
  const [pending, setPending] = useState<{ vm: VmRow; action: VmAction } | null>(null);
  const [outcome, setOutcome] = useState<string | null>(null);

  const after = cursors[cursors.length - 1] ?? null;
  const vms = useQuery({
    queryKey: ["vms", tenantId, filters, pageSize, after],
    queryFn: async () =>
      pick(
        (
          await request(VmsQuery, {
            tenantId,
            first: pageSize,
            after,
            powerState: filters.powerState || null,
            host: filters.host || null,
            owner: filters.owner || null,
            idleState: filters.idleState || null,
          })
        ).vms,
        "VmConnection",
      ),
    placeholderData: keepPreviousData,
  });

  const act = useMutation({
    mutationFn: async ({ vm, action }: { vm: VmRow; action: VmAction }) => {
      if (action.kind === "archive") {
        return pick((await request(ArchiveVmMutation, { vmId: vm.id })).archiveVm, "Command");
      }
      if (action.kind === "restore") {
        return pick((await request(RestoreVmMutation, { vmId: vm.id })).restoreVm, "Command");
      }
      const sighting = newest(vm);
      if (!sighting) throw new ApiError(`${vm.name} has no sighting to send the command to.`);
      return pick(
        (await request(PowerVmMutation, { sightingId: sighting.id, action: action.action }))
          .powerVm,
        "Command",
      );
    },
    onSuccess: (command, { vm, action }) =>
      setOutcome(`${action.label} of ${vm.name} is on its way (command ${command.id}).`),
    onSettled: () => client.invalidateQueries({ queryKey: ["vms", tenantId] }),
  });

  function pickAction(vm: VmRow, action: VmAction) {
    setOutcome(null);
    if (action.danger) setPending({ vm, action });
    else act.mutate({ vm, action });
  }

  const columns = useMemo(
    () => [
      column.accessor("name", {
        header: "Name",
        cell: (c) => (
          <span className="vm-name">
            {c.row.original.lifeState === "ARCHIVED" ? (
              <span
                className="icon-archived"
                role="img"
                aria-label="Archived"
                title={c.row.original.archive ? archiveSummary(c.row.original.archive) : "Archived"}
              >
                ▣
              </span>
            ) : null}
            <Link to={c.row.original.id}>{c.getValue()}</Link>
          </span>
        ),
      }),
      column.accessor("lifeState", {
        header: "State",
        cell: (c) => (
          <span className={`badge life-${c.getValue().toLowerCase()}`} title={c.row.original.lifeReason ?? undefined}>
            {LIFE_LABEL[c.getValue()]}
          </span>
        ),
      }),
      column.accessor((vm) => newest(vm)?.powerState ?? "", { id: "power", header: "Power" }),
      column.accessor((vm) => newest(vm)?.host ?? "", { id: "host", header: "Host" }),
      column.accessor((vm) => newest(vm)?.owner ?? "", { id: "owner", header: "Owner" }),
      column.accessor((vm) => newest(vm)?.idleState ?? "", {
        id: "idle",
        header: "Idleness",
        cell: (c) => c.getValue().toLowerCase(),
      }),
      column.accessor((vm) => newest(vm)?.seenAt ?? "", {
        id: "seen",
        header: "Last seen",
        cell: (c) => (c.getValue() ? new Date(c.getValue()).toLocaleString() : "—"),
      }),
    ],
    [],
  );
  // One array per answer: a new one each render makes the table reset itself, render again,
  // and so on for ever (the page froze when a menu opened).
  const data = useMemo(() => vms.data?.edges.map((e) => e.node) ?? [], [vms.data]);
  const table = useReactTable({
    data,
    columns,
    state: { sorting },
    onSortingChange: setSorting,
    getCoreRowModel: getCoreRowModel(),
    getSortedRowModel: getSortedRowModel(),
  });

  function applyFilters(e: FormEvent<HTMLFormElement>) {
    e.preventDefault();
    const form = new FormData(e.currentTarget);
    setFilters({
      powerState: String(form.get("powerState") ?? "").trim(),
      host: String(form.get("host") ?? "").trim(),
      owner: String(form.get("owner") ?? "").trim(),
      idleState: String(form.get("idleState") ?? "") as IdleState | "",
    });
    setCursors([]);
  }

  const filtered = Object.values(filters).some(Boolean);
  const rows = table.getRowModel().rows;

  return (
    <>
      <h1>VMs</h1>
      <form className="filters" onSubmit={applyFilters} aria-label="Filter VMs">
        <div>
          <label htmlFor="f-power">Power state</label>
          <input id="f-power" name="powerState" defaultValue={filters.powerState} placeholder="poweredOn" />
        </div>
        <div>
          <label htmlFor="f-host">Host</label>
          <input id="f-host" name="host" defaultValue={filters.host} />
        </div>
        <div>
          <label htmlFor="f-owner">Owner</label>
          <input id="f-owner" name="owner" defaultValue={filters.owner} />
        </div>
        <div>
          <label htmlFor="f-idle">Idleness</label>
          <select id="f-idle" name="idleState" defaultValue={filters.idleState}>
            <option value="">any</option>
            {IDLE_STATES.map((s) => (
              <option key={s} value={s}>
                {s.toLowerCase()}
              </option>
            ))}
          </select>
        </div>
        <button type="submit">Apply filters</button>
      </form>
      {outcome ? (
        <p className="notice notice-ok" role="status">
          {outcome}
        </p>
      ) : null}
      {act.isError ? <ErrorNote error={act.error} /> : null}
      {vms.isPending ? <Loading what="VMs" /> : null}
      {vms.isError ? <ErrorNote error={vms.error} retry={() => void vms.refetch()} /> : null}
      {vms.data && rows.length === 0 ? (
        <EmptyState title={filtered ? "No VM matches these filters" : "No VM seen yet"}>
          {filtered ? (
            <p>Clear a filter, or check its spelling: filters match the hypervisor's own words.</p>
          ) : (
            <p>
              VMs appear once a docked agent with the VM module has read its hypervisor. Dock one
              on the Agents page, with flow mode metadata or above so VM names may go up.
            </p>
          )}
        </EmptyState>
      ) : null}
      {rows.length > 0 ? (
        <div className="table-wrap">
          <table>
            <caption className="sr-only">VMs of this tenant, sortable by column</caption>
            <thead>
              {table.getHeaderGroups().map((g) => (
                <tr key={g.id}>
                  {g.headers.map((h) => {
                    const dir = h.column.getIsSorted();
                    return (
                      <th
                        key={h.id}
                        scope="col"
                        aria-sort={dir === "asc" ? "ascending" : dir === "desc" ? "descending" : "none"}
                      >
                        <button type="button" className="sort" onClick={h.column.getToggleSortingHandler()}>
                          {flexRender(h.column.columnDef.header, h.getContext())}
                          <span aria-hidden="true">{dir === "asc" ? " ▲" : dir === "desc" ? " ▼" : ""}</span>
                        </button>
                      </th>
                    );
                  })}
                  <th scope="col">
                    <span className="sr-only">Actions</span>
                  </th>
                </tr>
              ))}
            </thead>
            <tbody>
              {rows.map((r) => (
                <tr
                  key={r.id}
                  onContextMenu={(e) => {
                    e.preventDefault();
                    setMenuAt({ id: r.original.id, x: e.clientX, y: e.clientY });
                  }}
                >
                  {r.getVisibleCells().map((c) => (
                    <td key={c.id}>{flexRender(c.column.columnDef.cell, c.getContext())}</td>
                  ))}
                  <td>
                    <ActionMenu
                      vmName={r.original.name}
                      lifeState={r.original.lifeState}
                      onPick={(action) => pickAction(r.original, action)}
                      openAt={menuAt?.id === r.original.id ? menuAt : null}
                      onClose={() => setMenuAt(null)}
                    />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
      <nav className="pager" aria-label="VM pages">
        <button type="button" disabled={cursors.length === 0} onClick={() => setCursors((c) => c.slice(0, -1))}>
          Previous page
        </button>
        <span>Page {cursors.length + 1}</span>
        <button
          type="button"
          disabled={!vms.data?.pageInfo.hasNextPage}
          onClick={() => {
            const end = vms.data?.pageInfo.endCursor;
            if (end) setCursors((c) => [...c, end]);
          }}
        >
          Next page
        </button>
        <label htmlFor="page-size">Rows per page</label>
        <select
          id="page-size"
          value={pageSize}
          onChange={(e) => {
            setPageSize(Number(e.target.value));
            setCursors([]);
          }}
        >
          {PAGE_SIZES.map((n) => (
            <option key={n} value={n}>
              {n}
            </option>
          ))}
        </select>
      </nav>
      <ConfirmFor
        subject={pending}
        title={(p) => `${p.action.label} ${p.vm.name}?`}
        body={(p) =>
          p.action.kind === "archive"
            ? "The VM's disks move into the archive and leave the datastore; restore brings them back."
            : "The agent sends this to the hypervisor; anyone using the VM loses it until it is on again."
        }
        confirmLabel={(p) => p.action.label}
        onConfirm={(p) => act.mutate(p)}
        onClose={() => setPending(null)}
      />
    </>
  );
}
