/** Tenant settings: the flow mode in plain words (and changing it, which the cloud allows
 * the roles it allows), the members and their roles, and the API tokens. */
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { useParams } from "react-router";
import { pick } from "../api/errors";
import { request } from "../api/graphql";
import type { FlowMode } from "../gql/graphql";
import { ErrorNote, Loading } from "../ui/Notice";
import { useTitle } from "../ui/title";
import { FLOW_MODES, widens } from "./flowModes";
import { MembersPanel } from "./MembersPanel";
import { TokensPanel } from "./TokensPanel";
import { SetFlowModeMutation, TenantQuery } from "./queries";

export function SettingsPage() {
  const { tenantId = "" } = useParams();
  useTitle("Settings");
  const tenant = useQuery({
    queryKey: ["tenant", tenantId],
    queryFn: async () => pick((await request(TenantQuery, { id: tenantId })).tenant, "Tenant"),
  });
  return (
    <>
      <h1>Settings{tenant.data ? ` of ${tenant.data.name}` : ""}</h1>
      {tenant.isPending ? <Loading what="the tenant" /> : null}
      {tenant.isError ? <ErrorNote error={tenant.error} retry={() => void tenant.refetch()} /> : null}
      {tenant.data ? <FlowPanel tenantId={tenantId} current={tenant.data.flowMode} /> : null}
      <MembersPanel tenantId={tenantId} />
      <TokensPanel tenantId={tenantId} />
    </>
  );
}

function FlowPanel({ tenantId, current }: { tenantId: string; current: FlowMode }) {
  const client = useQueryClient();
  const [chosen, setChosen] = useState<FlowMode>(current);
  const change = useMutation({
    mutationFn: async (flowMode: FlowMode) =>
      pick((await request(SetFlowModeMutation, { tenantId, flowMode })).setFlowMode, "Tenant"),
    onSuccess: () => client.invalidateQueries({ queryKey: ["tenant", tenantId] }),
  });
  return (
    <section className="panel" aria-labelledby="flow-title">
      <h2 id="flow-title">Flow mode: what may go up to the cloud</h2>
      <p>
        Agents send up only what the flow mode allows; the cloud refuses anything more and
        records the refusal in the audit log. A site or an agent may be set narrower than the
        tenant, never wider: the narrowest wins.
      </p>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          change.mutate(chosen);
        }}
        aria-label="Change the flow mode"
      >
        <fieldset className="flow-modes">
          <legend>Flow mode of this tenant</legend>
          {FLOW_MODES.map((m) => (
            <div key={m.mode} className={m.mode === current ? "flow flow-current" : "flow"}>
              <input
                type="radio"
                id={`flow-${m.mode}`}
                name="flow"
                value={m.mode}
                checked={chosen === m.mode}
                onChange={() => setChosen(m.mode)}
                aria-describedby={`flow-${m.mode}-words`}
              />
              <label htmlFor={`flow-${m.mode}`}>
                <strong>{m.title}</strong>
                {m.mode === current ? " (now)" : null}
              </label>
              <div id={`flow-${m.mode}-words`} className="flow-words">
                <p>{m.summary}</p>
                <p>Goes up:</p>
                <ul>
                  {m.crosses.map((c) => (
                    <li key={c}>{c}</li>
                  ))}
                </ul>
                <p>Never goes up:</p>
                <ul>
                  {m.stays.map((c) => (
                    <li key={c}>{c}</li>
                  ))}
                </ul>
              </div>
            </div>
          ))}
        </fieldset>
        {chosen !== current ? (
          <p>
            {widens(current, chosen)
              ? "Widening lets more leave your sites; only an owner of this tenant itself may do it (not its MSP)."
              : "Narrowing takes effect at each agent's next poll; an admin may do it."}
          </p>
        ) : null}
        <button type="submit" className="primary" disabled={chosen === current || change.isPending}>
          Change the flow mode
        </button>
      </form>
      {change.isError ? <ErrorNote error={change.error} /> : null}
      <p role="status" className="copied">
        {change.isSuccess ? `The flow mode is now ${change.data.flowMode.toLowerCase()}.` : null}
      </p>
    </section>
  );
}
