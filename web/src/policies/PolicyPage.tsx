/** One policy: its current document as a form (the cloud's validation said at each field),
 * its versions and what changed between any two, and where it is assigned. */
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useMemo, useState, type FormEvent } from "react";
import { Link, useParams } from "react-router";
import { pick } from "../api/errors";
import { request } from "../api/graphql";
import type { PolicyTarget } from "../gql/graphql";
import { ErrorNote, Loading } from "../ui/Notice";
import { useTitle } from "../ui/title";
import { TableWrap } from "../ui/TableWrap";
import { When } from "../ui/When";
import { build, diff, formOf, label, place, type Json, type Leaf, type Placed } from "./document";
import {
  AssignPolicyMutation,
  NewPolicyVersionMutation,
  PolicyQuery,
  TargetsQuery,
  UnassignPolicyMutation,
} from "./queries";

type JsonObject = { [key: string]: Json };

export function PolicyPage() {
  const { tenantId = "", policyId = "" } = useParams();
  const got = useQuery({
    queryKey: ["policy", policyId],
    queryFn: async () => {
      const answer = await request(PolicyQuery, { id: policyId });
      return {
        policy: pick(answer.policy, "Policy"),
        versions: pick(answer.policyVersions, "PolicyVersionConnection").edges.map((e) => e.node),
        assignments: pick(answer.policyAssignments, "PolicyAssignmentConnection").edges.map(
          (e) => e.node,
        ),
      };
    },
  });
  useTitle(got.data ? `Policy ${got.data.policy.name}` : "Policy");
  // Here, not in the editor: a saved version remounts the editor on the new document.
  const [saved, setSaved] = useState<number | null>(null);

  return (
    <>
      <p className="crumbs">
        <Link to={`/t/${tenantId}/policies`}>Policies</Link>
      </p>
      {got.isPending ? <Loading what="the policy" /> : null}
      {got.isError ? <ErrorNote error={got.error} retry={() => void got.refetch()} /> : null}
      {got.data ? (
        <>
          <h1>{got.data.policy.name}</h1>
          <p>
            Kind <code>{got.data.policy.kind}</code>, version {got.data.policy.currentVersion}.
          </p>
          <Editor
            key={`edit-${got.data.policy.currentVersion}`}
            policyId={policyId}
            next={got.data.policy.currentVersion + 1}
            saved={saved}
            onSaved={setSaved}
            document={
              (got.data.versions.at(-1)?.document ?? {}) as JsonObject
            }
          />
          <Versions key={`versions-${got.data.versions.length}`} versions={got.data.versions} />
          <Assignments
            tenantId={tenantId}
            policyId={policyId}
            assignments={got.data.assignments}
          />
        </>
      ) : null}
    </>
  );
}

function Editor({
  policyId,
  next,
  document,
  saved,
  onSaved,
}: {
  policyId: string;
  next: number;
  document: JsonObject;
  saved: number | null;
  onSaved: (version: number | null) => void;
}) {
  const client = useQueryClient();
  const form = useMemo(() => formOf(document), [document]);
  const [values, setValues] = useState<Record<string, boolean | string>>({});
  const [placed, setPlaced] = useState<Placed>({ at: {}, general: [] });
  const save = useMutation({
    mutationFn: async (doc: JsonObject) => {
      const answer = (await request(NewPolicyVersionMutation, { policyId, document: doc }))
        .newPolicyVersion;
      if (answer.__typename === "InvalidInput") return { kind: "invalid" as const, problems: answer.problems ?? [] };
      return { kind: "saved" as const, version: pick(answer, "PolicyVersion").version };
    },
    onSuccess: async (result) => {
      if (result.kind === "invalid") {
        setPlaced(
          result.problems.length
            ? place(result.problems, form)
            : { at: {}, general: ["The cloud refused the document."] },
        );
        return;
      }
      onSaved(result.version);
      await client.invalidateQueries({ queryKey: ["policy", policyId] });
    },
  });

  function onSubmit(e: FormEvent<HTMLFormElement>) {
    e.preventDefault();
    onSaved(null);
    const built = build(form.leaves, values);
    if (!built.ok) {
      setPlaced({
        at: Object.fromEntries(Object.entries(built.errors).map(([k, v]) => [k, [v]])),
        general: [],
      });
      return;
    }
    setPlaced({ at: {}, general: [] });
    save.mutate(built.document);
  }

  const set = (path: string, value: boolean | string) =>
    setValues((v) => ({ ...v, [path]: value }));
  const problemCount =
    placed.general.length + Object.values(placed.at).reduce((n, m) => n + m.length, 0);

  return (
    <section className="panel" aria-labelledby="edit-title">
      <h2 id="edit-title">Edit</h2>
      <form onSubmit={onSubmit} aria-label="Edit the policy" noValidate>
        {problemCount ? (
          <div className="notice notice-error" role="alert">
            <p>
              The cloud kept the current version: {problemCount}{" "}
              {problemCount === 1 ? "value needs" : "values need"} mending, each said at its
              field.
            </p>
            {placed.general.map((m) => (
              <p key={m}>{m}</p>
            ))}
          </div>
        ) : null}
        {form.leaves.length === 0 ? (
          <p>This kind's document has no settings.</p>
        ) : (
          <div className="doc-form">
            {form.leaves.map((leaf) => (
              <LeafField
                key={leaf.path}
                leaf={leaf}
                value={values[leaf.path] ?? leaf.initial}
                problems={placed.at[leaf.path] ?? []}
                onChange={(v) => set(leaf.path, v)}
              />
            ))}
          </div>
        )}
        <div className="row row-start">
          <button type="submit" className="primary" disabled={save.isPending}>
            Save as version {next}
          </button>
        </div>
        {save.isError ? <ErrorNote error={save.error} /> : null}
        <p role="status" className="copied">
          {saved !== null ? `Saved: version ${saved} goes to the agents it is assigned to.` : null}
        </p>
      </form>
    </section>
  );
}

function LeafField({
  leaf,
  value,
  problems,
  onChange,
}: {
  leaf: Leaf;
  value: boolean | string;
  problems: string[];
  onChange: (v: boolean | string) => void;
}) {
  const id = `f-${leaf.path.replaceAll(".", "-")}`;
  const all = problems;
  const described = all.length ? `${id}-error` : undefined;
  const common = {
    id,
    name: leaf.path,
    "aria-invalid": all.length ? true : undefined,
    "aria-describedby": described,
  };
  return (
    <div className={all.length ? "doc-field doc-field-bad" : "doc-field"}>
      <label htmlFor={id}>{label(leaf.path)}</label>
      {leaf.kind === "boolean" ? (
        <input
          {...common}
          type="checkbox"
          checked={value === true}
          onChange={(e) => onChange(e.target.checked)}
        />
      ) : leaf.kind === "number" ? (
        <input
          {...common}
          type="text"
          inputMode="decimal"
          value={String(value)}
          onChange={(e) => onChange(e.target.value)}
        />
      ) : leaf.kind === "string" ? (
        <input {...common} type="text" value={String(value)} onChange={(e) => onChange(e.target.value)} />
      ) : (
        <input
          {...common}
          type="text"
          className="mono"
          value={String(value)}
          placeholder="none"
          onChange={(e) => onChange(e.target.value)}
        />
      )}
      {all.length ? (
        <p className="field-error" id={described}>
          {all.join(" ")}
        </p>
      ) : null}
    </div>
  );
}

type Version = { version: number; document: unknown; createdAt: string };

function Versions({ versions }: { versions: Version[] }) {
  const last = versions.at(-1)?.version ?? 1;
  const [from, setFrom] = useState(Math.max(1, last - 1));
  const [to, setTo] = useState(last);
  const a = versions.find((v) => v.version === from);
  const b = versions.find((v) => v.version === to);
  const changes = a && b ? diff(a.document as Json, b.document as Json) : [];
  return (
    <section className="panel" aria-labelledby="versions-title">
      <h2 id="versions-title">Versions</h2>
      <ol className="versions">
        {[...versions].reverse().map((v) => (
          <li key={v.version}>
            Version {v.version},{" "}
            <When at={v.createdAt} />
          </li>
        ))}
      </ol>
      {versions.length < 2 ? (
        <p>Only one version so far: save a change above to compare two.</p>
      ) : (
        <>
          <div className="filters">
            <div>
              <label htmlFor="diff-from">Compare version</label>
              <select id="diff-from" value={from} onChange={(e) => setFrom(Number(e.target.value))}>
                {versions.map((v) => (
                  <option key={v.version} value={v.version}>
                    {v.version}
                  </option>
                ))}
              </select>
            </div>
            <div>
              <label htmlFor="diff-to">with version</label>
              <select id="diff-to" value={to} onChange={(e) => setTo(Number(e.target.value))}>
                {versions.map((v) => (
                  <option key={v.version} value={v.version}>
                    {v.version}
                  </option>
                ))}
              </select>
            </div>
          </div>
          {changes.length === 0 ? (
            <p>Versions {from} and {to} hold the same document.</p>
          ) : (
            <TableWrap label="Changes between the versions">
              <table>
                <caption>
                  What changed from version {from} to version {to}
                </caption>
                <thead>
                  <tr>
                    <th scope="col">Setting</th>
                    <th scope="col">Change</th>
                    <th scope="col">Version {from}</th>
                    <th scope="col">Version {to}</th>
                  </tr>
                </thead>
                <tbody>
                  {changes.map((c) => (
                    <tr key={c.path} className={`diff-${c.change}`}>
                      <td>{label(c.path)}</td>
                      <td>{c.change}</td>
                      <td>
                        <code>{c.before ?? "—"}</code>
                      </td>
                      <td>
                        <code>{c.after ?? "—"}</code>
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </TableWrap>
          )}
        </>
      )}
    </section>
  );
}

type Assignment = { id: string; targetKind: PolicyTarget; targetId: string };

function Assignments({
  tenantId,
  policyId,
  assignments,
}: {
  tenantId: string;
  policyId: string;
  assignments: Assignment[];
}) {
  const client = useQueryClient();
  const targets = useQuery({
    queryKey: ["policy-targets", tenantId],
    queryFn: async () => {
      const answer = await request(TargetsQuery, { tenantId });
      return {
        sites: pick(answer.sites, "SiteConnection").edges.map((e) => e.node),
        agents: pick(answer.agents, "AgentConnection").edges.map((e) => e.node),
      };
    },
  });
  const [kind, setKind] = useState<PolicyTarget>("TENANT");
  const change = useMutation({
    mutationFn: async (v: { assign: boolean; targetKind: PolicyTarget; targetId: string }) => {
      const vars = { policyId, targetKind: v.targetKind, targetId: v.targetId };
      if (v.assign) {
        pick((await request(AssignPolicyMutation, vars)).assignPolicy, "PolicyAssignment");
      } else {
        pick((await request(UnassignPolicyMutation, vars)).unassignPolicy, "PolicyAssignment");
      }
    },
    onSettled: () => client.invalidateQueries({ queryKey: ["policy", policyId] }),
  });

  const name = (a: { targetKind: PolicyTarget; targetId: string }): string => {
    if (a.targetKind === "TENANT") return "The whole tenant";
    const list = a.targetKind === "SITE" ? targets.data?.sites : targets.data?.agents;
    const found = list?.find((t) => t.id === a.targetId)?.name ?? a.targetId;
    return `${a.targetKind === "SITE" ? "Site" : "Agent"} ${found}`;
  };

  function onAssign(e: FormEvent<HTMLFormElement>) {
    e.preventDefault();
    const form = new FormData(e.currentTarget);
    const targetId = kind === "TENANT" ? tenantId : String(form.get("target") ?? "");
    if (!targetId) {
      change.reset();
      return;
    }
    change.mutate({ assign: true, targetKind: kind, targetId });
  }

  const choices = kind === "SITE" ? targets.data?.sites : targets.data?.agents;
  return (
    <section className="panel" aria-labelledby="assign-title">
      <h2 id="assign-title">Assigned to</h2>
      {assignments.length === 0 ? (
        <p>
          Not assigned: no agent follows this policy yet. Assign it to the whole tenant, a site
          or one agent below.
        </p>
      ) : (
        <ul className="plain-list">
          {assignments.map((a) => (
            <li key={a.id}>
              <span>{name(a)}</span>
              <button
                type="button"
                onClick={() =>
                  change.mutate({ assign: false, targetKind: a.targetKind, targetId: a.targetId })
                }
                disabled={change.isPending}
              >
                Unassign <span className="sr-only">from {name(a)}</span>
              </button>
            </li>
          ))}
        </ul>
      )}
      {targets.isError ? <ErrorNote error={targets.error} /> : null}
      <form className="grid-form" onSubmit={onAssign} aria-label="Assign the policy">
        <label htmlFor="assign-kind">Assign to</label>
        <select
          id="assign-kind"
          value={kind}
          onChange={(e) => setKind(e.target.value as PolicyTarget)}
        >
          <option value="TENANT">the whole tenant</option>
          <option value="SITE">a site</option>
          <option value="AGENT">one agent</option>
        </select>
        {kind !== "TENANT" ? (
          <>
            <label htmlFor="assign-target">{kind === "SITE" ? "Site" : "Agent"}</label>
            {choices && choices.length === 0 ? (
              <p id="assign-target" className="hint">
                This tenant has no {kind === "SITE" ? "site" : "agent"} yet: dock one on the
                Agents page.
              </p>
            ) : (
              <select id="assign-target" name="target">
                {(choices ?? []).map((t) => (
                  <option key={t.id} value={t.id}>
                    {t.name}
                  </option>
                ))}
              </select>
            )}
          </>
        ) : null}
        <button type="submit" disabled={change.isPending}>
          Assign
        </button>
      </form>
      {change.isError ? (
<ErrorNote error={change.error} />
      ) : null}
    </section>
  );
}
