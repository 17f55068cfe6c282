/** Members and roles: invite by e-mail, change a role, remove. Grants through the MSP show
 * but are changed in the MSP. */
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { pick } from "../api/errors";
import { request } from "../api/graphql";
import type { Role } from "../gql/graphql";
import { ConfirmFor } from "../ui/ConfirmDialog";
import { ErrorNote, Loading } from "../ui/Notice";
import { SimpleTable } from "../ui/TableWrap";
import {
  ChangeMemberRoleMutation,
  InviteMemberMutation,
  MembersQuery,
  RemoveMemberMutation,
} from "./queries";

const ROLES: { value: Role; label: string }[] = [
  { value: "VIEWER", label: "Viewer: sees everything, changes nothing" },
  { value: "OPERATOR", label: "Operator: also runs commands and powers VMs" },
  { value: "ADMIN", label: "Admin: also policies, agents, members and tokens" },
  { value: "OWNER", label: "Owner: also widens the flow mode and adds owners" },
];
const SHORT: Record<Role, string> = {
  VIEWER: "Viewer",
  OPERATOR: "Operator",
  ADMIN: "Admin",
  OWNER: "Owner",
};

export function MembersPanel({ tenantId }: { tenantId: string }) {
  const client = useQueryClient();
  const key = ["members", tenantId];
  const members = useQuery({
    queryKey: key,
    queryFn: async () =>
      pick((await request(MembersQuery, { tenantId })).members, "MemberConnection").edges.map(
        (e) => e.node,
      ),
  });
  const done = () => client.invalidateQueries({ queryKey: key });
  const invite = useMutation({
    mutationFn: async (v: { email: string; role: Role }) =>
      pick((await request(InviteMemberMutation, { tenantId, ...v })).inviteMember, "Member"),
    onSuccess: done,
  });
  const change = useMutation({
    mutationFn: async (v: { userId: string; role: Role }) =>
      pick((await request(ChangeMemberRoleMutation, { tenantId, ...v })).changeMemberRole, "Member"),
    onSettled: done,
  });
  const remove = useMutation({
    mutationFn: async (userId: string) =>
      pick((await request(RemoveMemberMutation, { tenantId, userId })).removeMember, "Member"),
    onSettled: done,
  });
  const [removing, setRemoving] = useState<{ userId: string; email: string } | null>(null);

  function onInvite(e: FormEvent<HTMLFormElement>) {
    e.preventDefault();
    const form = new FormData(e.currentTarget);
    invite.mutate({
      email: String(form.get("email") ?? "").trim(),
      role: String(form.get("role")) as Role,
    });
  }

  return (
    <section className="panel" aria-labelledby="members-title">
      <h2 id="members-title">Members and roles</h2>
      {members.isPending ? <Loading what="members" /> : null}
      {members.isError ? <ErrorNote error={members.error} retry={() => void members.refetch()} /> : null}
      {change.isError ? <ErrorNote error={change.error} /> : null}
      {remove.isError ? <ErrorNote error={remove.error} /> : null}
      {members.data ? (
        <SimpleTable
          label="Members"
          caption="Members of this tenant"
          columns={["Person", "Role", "Status"]}
          actions
        >
          {members.data.map((m) => (
            <tr key={`${m.userId}-${m.via}`}>
              <td>
                {m.name ? `${m.name} ` : null}
                <span className="muted">{m.email}</span>
              </td>
              <td>
                {m.via === "MSP" ? (
                  `${SHORT[m.role]} (through the MSP)`
                ) : (
                  <>
                    <label className="sr-only" htmlFor={`role-${m.userId}`}>
                      Role of {m.email}
                    </label>
                    <select
                      id={`role-${m.userId}`}
                      value={m.role}
                      disabled={change.isPending}
                      onChange={(e) =>
                        change.mutate({ userId: m.userId, role: e.target.value as Role })
                      }
                    >
                      {ROLES.map((r) => (
                        <option key={r.value} value={r.value}>
                          {SHORT[r.value]}
                        </option>
                      ))}
                    </select>
                  </>
                )}
              </td>
              <td>{m.invited ? "Invited, not signed in yet" : "Active"}</td>
              <td>
                {m.via === "DIRECT" ? (
                  <button
                    type="button"
                    className="danger"
                    onClick={() => setRemoving({ userId: m.userId, email: m.email })}
                  >
                    Remove <span className="sr-only">{m.email}</span>
                  </button>
                ) : null}
              </td>
            </tr>
          ))}
        </SimpleTable>
      ) : null}
      <form className="grid-form invite" onSubmit={onInvite} aria-label="Invite a member">
        <label htmlFor="invite-email">E-mail</label>
        <input id="invite-email" name="email" type="email" required maxLength={320} autoComplete="off" />
        <label htmlFor="invite-role">Role</label>
        <select id="invite-role" name="role" defaultValue="VIEWER">
          {ROLES.map((r) => (
            <option key={r.value} value={r.value}>
              {r.label}
            </option>
          ))}
        </select>
        <button type="submit" disabled={invite.isPending}>
          Invite
        </button>
      </form>
      {invite.isError ? <ErrorNote error={invite.error} /> : null}
      <p role="status" className="copied">
        {invite.isSuccess
          ? `Invited ${invite.data.email}: their first sign-in with that address joins them.`
          : null}
      </p>
      <ConfirmFor
        subject={removing}
        title={(m) => `Remove ${m.email}?`}
        body="They lose their role in this tenant (not elsewhere), and their API tokens for it stop working."
        confirmLabel="Remove member"
        onConfirm={(m) => remove.mutate(m.userId)}
        onClose={() => setRemoving(null)}
      />
    </section>
  );
}
