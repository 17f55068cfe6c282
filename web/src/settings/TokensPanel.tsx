/** API tokens: create one with an expiry (its secret shown once), the list, revoke. */
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { pick } from "../api/errors";
import { request } from "../api/graphql";
import { ConfirmFor } from "../ui/ConfirmDialog";
import { CopyButton } from "../ui/CopyButton";
import { EmptyState, ErrorNote, Loading } from "../ui/Notice";
import { SimpleTable } from "../ui/TableWrap";
import { PRESETS, expiry } from "./expiry";
import { ApiTokensQuery, CreateApiTokenMutation, RevokeApiTokenMutation } from "./queries";

export function TokensPanel({ tenantId }: { tenantId: string }) {
  const client = useQueryClient();
  const key = ["api-tokens", tenantId];
  const tokens = useQuery({
    queryKey: key,
    queryFn: async () =>
      pick((await request(ApiTokensQuery, { tenantId })).apiTokens, "ApiTokenConnection").edges.map(
        (e) => e.node,
      ),
  });
  const create = useMutation({
    mutationFn: async (v: { name: string; expiresInDays: number }) =>
      pick((await request(CreateApiTokenMutation, { tenantId, ...v })).createApiToken, "NewApiToken"),
    onSuccess: () => client.invalidateQueries({ queryKey: key }),
  });
  const revoke = useMutation({
    mutationFn: async (id: string) =>
      pick((await request(RevokeApiTokenMutation, { id })).revokeApiToken, "ApiToken"),
    onSettled: () => client.invalidateQueries({ queryKey: key }),
  });
  const [choice, setChoice] = useState("90");
  const [date, setDate] = useState("");
  const [fieldError, setFieldError] = useState<string | null>(null);
  const [revoking, setRevoking] = useState<{ id: string; name: string } | null>(null);

  function onCreate(e: FormEvent<HTMLFormElement>) {
    e.preventDefault();
    const picked = expiry(choice, date, new Date());
    if (!picked.ok) {
      setFieldError(picked.error);
      return;
    }
    setFieldError(null);
    const name = String(new FormData(e.currentTarget).get("name") ?? "").trim();
    create.mutate({ name, expiresInDays: picked.days });
  }

  const now = Date.now();
  return (
    <section className="panel" aria-labelledby="tokens-title">
      <h2 id="tokens-title">API tokens</h2>
      <p>
        A token lets a script use the API as you, in this tenant only, with your role here,
        until it expires or is revoked.
      </p>
      {tokens.isPending ? <Loading what="API tokens" /> : null}
      {tokens.isError ? <ErrorNote error={tokens.error} retry={() => void tokens.refetch()} /> : null}
      {revoke.isError ? <ErrorNote error={revoke.error} /> : null}
      {tokens.data && tokens.data.length === 0 ? (
        <EmptyState title="No API token yet">
          <p>Create one below for a script or an MSP's automation; its secret shows once.</p>
        </EmptyState>
      ) : null}
      {tokens.data && tokens.data.length > 0 ? (
        <SimpleTable
          label="API tokens"
          caption="API tokens of this tenant"
          columns={["Name", "Expires", "Last used", "Status"]}
          actions
        >
          {tokens.data.map((t) => {
            const expired = t.expiresAt !== null && t.expiresAt !== undefined && Date.parse(t.expiresAt) <= now;
            return (
              <tr key={t.id}>
                <td>{t.name}</td>
                <td>{t.expiresAt ? new Date(t.expiresAt).toLocaleDateString() : "never"}</td>
                <td>{t.lastUsedAt ? new Date(t.lastUsedAt).toLocaleString() : "never"}</td>
                <td>{t.revokedAt ? "Revoked" : expired ? "Expired" : "Active"}</td>
                <td>
                  {t.revokedAt || expired ? null : (
                    <button
                      type="button"
                      className="danger"
                      onClick={() => setRevoking({ id: t.id, name: t.name })}
                    >
                      Revoke <span className="sr-only">{t.name}</span>
                    </button>
                  )}
                </td>
              </tr>
            );
          })}
        </SimpleTable>
      ) : null}
      <form className="grid-form" onSubmit={onCreate} aria-label="Create an API token" noValidate>
        <label htmlFor="token-name">Name</label>
        <input id="token-name" name="name" required maxLength={200} placeholder="billing export" />
        <label htmlFor="token-expiry">Expires after</label>
        <select id="token-expiry" value={choice} onChange={(e) => setChoice(e.target.value)}>
          {PRESETS.map((p) => (
            <option key={p.days} value={p.days}>
              {p.label}
            </option>
          ))}
          <option value="date">a day I pick</option>
        </select>
        {choice === "date" ? (
          <>
            <label htmlFor="token-date">Last day it works</label>
            <input
              id="token-date"
              type="date"
              value={date}
              onChange={(e) => setDate(e.target.value)}
              aria-invalid={fieldError ? true : undefined}
              aria-describedby={fieldError ? "token-date-error" : undefined}
            />
          </>
        ) : null}
        {fieldError ? (
          <p id="token-date-error" className="field-error hint">
            {fieldError}
          </p>
        ) : null}
        <button type="submit" className="primary" disabled={create.isPending}>
          Create API token
        </button>
      </form>
      {create.isError ? <ErrorNote error={create.error} /> : null}
      {create.data ? (
        <div className="dock-line">
          <p>
            The token <strong>{create.data.token.name}</strong> works until{" "}
            {create.data.token.expiresAt ? new Date(create.data.token.expiresAt).toLocaleString() : "revoked"}.
            Copy its secret now: the cloud keeps only its hash and cannot show it again. Send it
            as <code>Authorization: Bearer …</code>.
          </p>
          <label htmlFor="token-secret">Secret</label>
          <input id="token-secret" readOnly value={create.data.secret} className="mono" onFocus={(e) => e.target.select()} />
          <CopyButton key={create.data.secret} text={create.data.secret} label="Copy secret" />
        </div>
      ) : null}
      <ConfirmFor
        subject={revoking}
        title={(t) => `Revoke ${t.name}?`}
        body="Scripts using it are refused from now on. This cannot be undone; make a new token if one is needed."
        confirmLabel="Revoke token"
        onConfirm={(t) => revoke.mutate(t.id)}
        onClose={() => setRevoking(null)}
      />
    </section>
  );
}
