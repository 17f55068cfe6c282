/** The audit log, newest first: who did what to what, and how it ended, filtered by action,
 * outcome and kind of actor (the filters live in the address), a page of 50 at a time. */
import { useInfiniteQuery } from "@tanstack/react-query";
import type { FormEvent } from "react";
import { useParams, useSearchParams } from "react-router";
import { pick } from "../api/errors";
import { request } from "../api/graphql";
import { EmptyState, ErrorNote, Loading } from "../ui/Notice";
import { SimpleTable } from "../ui/TableWrap";
import { When } from "../ui/When";
import { useTitle } from "../ui/title";
import { fromSearch, isFiltered, toSearch, variables, type AuditFilters } from "./filters";
import { AuditLogQuery } from "./queries";

const PAGE = 50;

export function AuditPage() {
  const { tenantId = "" } = useParams();
  useTitle("Audit log");
  const [search, setSearch] = useSearchParams();
  const filters = fromSearch(search);
  const log = useInfiniteQuery({
    queryKey: ["audit", tenantId, filters],
    initialPageParam: null as string | null,
    queryFn: async ({ pageParam }) =>
      pick(
        (
          await request(AuditLogQuery, {
            tenantId,
            first: PAGE,
            after: pageParam,
            ...variables(filters),
          })
        ).auditLog,
        "AuditRecordConnection",
      ),
    getNextPageParam: (last) => (last.pageInfo.hasNextPage ? (last.pageInfo.endCursor ?? null) : null),
  });
  const rows = log.data?.pages.flatMap((p) => p.edges.map((e) => e.node)) ?? [];

  function onFilter(e: FormEvent<HTMLFormElement>) {
    e.preventDefault();
    const form = new FormData(e.currentTarget);
    const next: AuditFilters = {
      action: String(form.get("action") ?? ""),
      outcome: String(form.get("outcome") ?? ""),
      actorKind: String(form.get("actor") ?? "") as AuditFilters["actorKind"],
    };
    setSearch(toSearch(next));
  }

  return (
    <>
      <h1>Audit log</h1>
      <form className="filters" onSubmit={onFilter} aria-label="Filter the audit log" key={search.toString()}>
        <div>
          <label htmlFor="audit-action">Action starts with</label>
          <input id="audit-action" name="action" defaultValue={filters.action} placeholder="policy." />
        </div>
        <div>
          <label htmlFor="audit-outcome">Outcome</label>
          <select id="audit-outcome" name="outcome" defaultValue={filters.outcome}>
            <option value="">any</option>
            <option value="ok">ok</option>
            <option value="refused">refused</option>
          </select>
        </div>
        <div>
          <label htmlFor="audit-actor">Who</label>
          <select id="audit-actor" name="actor" defaultValue={filters.actorKind}>
            <option value="">anyone</option>
            <option value="USER">a person</option>
            <option value="AGENT">an agent</option>
            <option value="SYSTEM">the cloud itself</option>
            <option value="ANONYMOUS">someone not signed in</option>
          </select>
        </div>
        <button type="submit">Apply filters</button>
        {isFiltered(filters) ? (
          <button type="button" onClick={() => setSearch(new URLSearchParams())}>
            Clear filters
          </button>
        ) : null}
      </form>
      {log.isPending ? <Loading what="the audit log" /> : null}
      {log.isError ? <ErrorNote error={log.error} retry={() => void log.refetch()} /> : null}
      {log.data && rows.length === 0 ? (
        isFiltered(filters) ? (
          <EmptyState title="No record matches these filters">
            <p>Loosen a filter, or clear them all to see the whole log.</p>
          </EmptyState>
        ) : (
          <EmptyState title="Nothing recorded yet">
            <p>Every change to the tenant and every refused attempt is recorded here as it happens.</p>
          </EmptyState>
        )
      ) : null}
      {rows.length > 0 ? (
        <SimpleTable
          label="Audit records"
          caption="Audit records, newest first"
          columns={["When", "Who", "Action", "Target", "Outcome", "Detail"]}
        >
          {rows.map((r) => (
            <tr key={r.id} className={r.outcome === "refused" ? "refused" : undefined}>
              <td>
                <When at={r.at} />
              </td>
              <td>
                {r.actorKind.toLowerCase()}
                {r.actorId ? <span className="muted id"> {r.actorId.slice(0, 8)}</span> : null}
              </td>
              <td>
                <code>{r.action}</code>
              </td>
              <td className="id">{r.target ?? "—"}</td>
              <td>{r.outcome}</td>
              <td className="detail">{detail(r.detail)}</td>
            </tr>
          ))}
        </SimpleTable>
      ) : null}
      {log.hasNextPage ? (
        <div className="pager">
          <button type="button" onClick={() => void log.fetchNextPage()} disabled={log.isFetchingNextPage}>
            Show older records
          </button>
        </div>
      ) : null}
    </>
  );
}

function detail(value: unknown): string {
  if (!value || typeof value !== "object") return "";
  return Object.entries(value as Record<string, unknown>)
    .map(([k, v]) => `${k}: ${typeof v === "string" ? v : JSON.stringify(v)}`)
    .join(", ");
}
