/** Create an enrolment token for a site and show the one line that docks an agent with it.
 * The secret is shown once (the cloud keeps only its hash), so the line is copy-able. */
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import type { FormEvent } from "react";
import { pick } from "../api/errors";
import { request } from "../api/graphql";
import type { FlowMode } from "../gql/graphql";
import { CopyButton } from "../ui/CopyButton";
import { ErrorNote, Loading } from "../ui/Notice";
import { dockLine } from "./dockLine";
import { CreateEnrolmentTokenMutation, CreateSiteMutation, SitesQuery } from "./queries";

const FLOWS: { value: FlowMode; label: string }[] = [
  { value: "CONFIG", label: "Config only: settings and states go up, no names or data" },
  { value: "METADATA", label: "Metadata: also names, sizes and times" },
  { value: "DATA", label: "Data: also file contents (backups through the cloud)" },
];

export function EnrolPanel({ tenantId }: { tenantId: string }) {
  const client = useQueryClient();
  const sites = useQuery({
    queryKey: ["sites", tenantId],
    queryFn: async () =>
      pick((await request(SitesQuery, { tenantId })).sites, "SiteConnection").edges.map(
        (e) => e.node,
      ),
  });
  const createSite = useMutation({
    mutationFn: async (name: string) =>
      pick((await request(CreateSiteMutation, { tenantId, name })).createSite, "Site"),
    onSuccess: () => client.invalidateQueries({ queryKey: ["sites", tenantId] }),
  });
  const create = useMutation({
    mutationFn: async (vars: { siteId: string; maxFlow: FlowMode; ttlMinutes: number }) =>
      pick(
        (await request(CreateEnrolmentTokenMutation, { ...vars, note: "created in the portal" }))
          .createEnrolmentToken,
        "EnrolmentTokenCreated",
      ),
  });

  function onCreate(e: FormEvent<HTMLFormElement>) {
    e.preventDefault();
    const form = new FormData(e.currentTarget);
    create.mutate({
      siteId: String(form.get("site")),
      maxFlow: String(form.get("flow")) as FlowMode,
      ttlMinutes: Number(form.get("ttl")),
    });
  }

  function onCreateSite(e: FormEvent<HTMLFormElement>) {
    e.preventDefault();
    const name = String(new FormData(e.currentTarget).get("name") ?? "").trim();
    if (name) createSite.mutate(name);
  }

  return (
    <section className="panel" aria-labelledby="enrol-title">
      <h2 id="enrol-title">Dock a new agent</h2>
      {sites.isPending ? <Loading what="sites" /> : null}
      {sites.isError ? <ErrorNote error={sites.error} retry={() => void sites.refetch()} /> : null}
      {sites.data && sites.data.length === 0 ? (
        <form className="stack" onSubmit={onCreateSite} aria-label="Create a site">
          <p>
            An agent docks into a site (a place with its own machines). This tenant has none yet:
            name its first one.
          </p>
          <label htmlFor="site-name">Site name</label>
          <input id="site-name" name="name" required maxLength={200} />
          {createSite.isError ? <ErrorNote error={createSite.error} /> : null}
          <button type="submit" disabled={createSite.isPending}>
            Create site
          </button>
        </form>
      ) : null}
      {sites.data && sites.data.length > 0 ? (
        <form className="grid-form" onSubmit={onCreate} aria-label="Create an enrolment token">
          <label htmlFor="enrol-site">Site</label>
          <select id="enrol-site" name="site">
            {sites.data.map((s) => (
              <option key={s.id} value={s.id}>
                {s.name}
              </option>
            ))}
          </select>
          <label htmlFor="enrol-flow">Most that may go up</label>
          <select id="enrol-flow" name="flow" defaultValue="CONFIG">
            {FLOWS.map((f) => (
              <option key={f.value} value={f.value}>
                {f.label}
              </option>
            ))}
          </select>
          <label htmlFor="enrol-ttl">Valid for</label>
          <select id="enrol-ttl" name="ttl" defaultValue="60">
            <option value="15">15 minutes</option>
            <option value="60">1 hour</option>
            <option value="1440">1 day</option>
          </select>
          <button type="submit" className="primary" disabled={create.isPending}>
            Create enrolment token
          </button>
        </form>
      ) : null}
      {create.isError ? <ErrorNote error={create.error} /> : null}
      {create.data ? (
        <DockLine
          line={dockLine(window.location.origin, create.data.secret, create.data.token.maxFlow)}
          expiresAt={create.data.token.expiresAt}
        />
      ) : null}
    </section>
  );
}

function DockLine({ line, expiresAt }: { line: string; expiresAt: string }) {
  return (
    <div className="dock-line">
      <p>
        Run this on the agent's machine before {new Date(expiresAt).toLocaleString()}. The token
        works once and is shown only now.
      </p>
      <label htmlFor="dock-command">Dock command</label>
      <textarea id="dock-command" readOnly rows={3} value={line} onFocus={(e) => e.target.select()} />
      <CopyButton key={line} text={line} label="Copy command" />
    </div>
  );
}
