/** Policies: the tenant's policies by name, and a new one (made with its kind's defaults,
 * then edited on its own page). */
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import type { FormEvent } from "react";
import { Link, useNavigate, useParams } from "react-router";
import { pick } from "../api/errors";
import { request } from "../api/graphql";
import { EmptyState, ErrorNote, Loading } from "../ui/Notice";
import { SimpleTable } from "../ui/TableWrap";
import { When } from "../ui/When";
import { useTitle } from "../ui/title";
import { CreatePolicyMutation, PoliciesQuery } from "./queries";

export function PoliciesPage() {
  const { tenantId = "" } = useParams();
  useTitle("Policies");
  const client = useQueryClient();
  const navigate = useNavigate();
  const policies = useQuery({
    queryKey: ["policies", tenantId],
    queryFn: async () =>
      pick((await request(PoliciesQuery, { tenantId })).policies, "PolicyConnection").edges.map(
        (e) => e.node,
      ),
  });
  const create = useMutation({
    mutationFn: async (vars: { name: string; kind: string }) =>
      pick((await request(CreatePolicyMutation, { tenantId, ...vars })).createPolicy, "Policy"),
    onSuccess: async (made) => {
      await client.invalidateQueries({ queryKey: ["policies", tenantId] });
      void navigate(`/t/${tenantId}/policies/${made.id}`);
    },
  });

  function onCreate(e: FormEvent<HTMLFormElement>) {
    e.preventDefault();
    const form = new FormData(e.currentTarget);
    create.mutate({
      name: String(form.get("name") ?? "").trim(),
      kind: String(form.get("kind") ?? "").trim(),
    });
  }

  return (
    <>
      <h1>Policies</h1>
      {policies.isPending ? <Loading what="policies" /> : null}
      {policies.isError ? (
        <ErrorNote error={policies.error} retry={() => void policies.refetch()} />
      ) : null}
      {policies.data && policies.data.length === 0 ? (
        <EmptyState title="No policy yet">
          <p>
            A policy tells a module's agents what to do (when a VM counts as idle, where
            archives go). Create one below; it starts with its kind's defaults, which you then
            edit and assign to the tenant, a site or an agent.
          </p>
        </EmptyState>
      ) : null}
      {policies.data && policies.data.length > 0 ? (
        <SimpleTable
          label="Policies"
          caption="Policies of this tenant"
          columns={["Name", "Kind", "Version", "Created"]}
        >
          {policies.data.map((p) => (
            <tr key={p.id}>
              <td>
                <Link to={p.id}>{p.name}</Link>
              </td>
              <td>
                <code>{p.kind}</code>
              </td>
              <td>{p.currentVersion}</td>
              <td>
                <When at={p.createdAt} />
              </td>
            </tr>
          ))}
        </SimpleTable>
      ) : null}
      <section className="panel" aria-labelledby="new-policy-title">
        <h2 id="new-policy-title">New policy</h2>
        <form className="grid-form" onSubmit={onCreate} aria-label="Create a policy">
          <label htmlFor="policy-name">Name</label>
          <input id="policy-name" name="name" required maxLength={200} />
          <label htmlFor="policy-kind">Kind</label>
          <input
            id="policy-kind"
            name="kind"
            required
            list="policy-kinds"
            aria-describedby="policy-kind-hint"
          />
          <datalist id="policy-kinds">
            <option value="vm-lifecycle" />
            <option value="noop" />
          </datalist>
          <p id="policy-kind-hint" className="hint">
            The module's policy kind, such as <code>vm-lifecycle</code>; the cloud names the
            kinds it knows if this one is not among them.
          </p>
          <button type="submit" className="primary" disabled={create.isPending}>
            Create policy
          </button>
        </form>
        {create.isError ? <ErrorNote error={create.error} /> : null}
      </section>
    </>
  );
}
