/** One job: its progress bar while it runs (useJob asks again every second), its command,
 * every event the agent reported, and, when it failed, why in words and what to do. */
import { useQuery } from "@tanstack/react-query";
import { Link, useParams } from "react-router";
import { pick } from "../api/errors";
import { request } from "../api/graphql";
import type { JobEventKind } from "../gql/graphql";
import { ErrorNote, Loading } from "../ui/Notice";
import { useTitle } from "../ui/title";
import { Progress } from "./Progress";
import { CommandQuery } from "./queries";
import { useJob } from "./useJob";
import { STATE_WORDS, isBad, isOpen, percent, whyItEnded } from "./words";

const EVENT_WORDS: Record<JobEventKind, string> = {
  STARTED: "Started",
  PROGRESS: "Progress",
  SUCCEEDED: "Succeeded",
  FAILED: "Failed",
};

export function JobPage() {
  const { tenantId = "", jobId = "" } = useParams();
  const job = useJob(jobId);
  const commandId = job.data?.commandId ?? null;
  const command = useQuery({
    // Asked again as the job moves: the command's own times (fetched, finished) move with it.
    queryKey: ["command", commandId, job.data?.state],
    enabled: commandId !== null,
    queryFn: async () => pick((await request(CommandQuery, { id: commandId ?? "" })).command, "Command"),
  });
  useTitle(job.data ? `Job ${job.data.kind}` : "Job");
  const events = job.data?.events.edges.map((e) => e.node) ?? [];
  const last = [...events].reverse().find((e) => e.kind === "FAILED" || e.detail);

  return (
    <>
      <p className="crumbs">
        <Link to={`/t/${tenantId}/jobs`}>Jobs</Link>
      </p>
      {job.isPending ? <Loading what="the job" /> : null}
      {job.isError ? <ErrorNote error={job.error} retry={() => void job.refetch()} /> : null}
      {job.data ? (
        <>
          <h1>
            Job <code>{job.data.kind}</code>
          </h1>
          <section className="panel" aria-labelledby="job-state">
            <h2 id="job-state">{STATE_WORDS[job.data.state]}</h2>
            {isOpen(job.data.state) || job.data.state === "SUCCEEDED" ? (
              <Progress
                value={job.data.state === "SUCCEEDED" ? 1 : job.data.progress}
                label="Job progress"
              />
            ) : null}
            <p role="status" className="sr-only">
              {STATE_WORDS[job.data.state]}
              {isOpen(job.data.state) && job.data.progress !== null
                ? `, ${percent(job.data.progress)} percent`
                : ""}
            </p>
            {isBad(job.data.state) ? (
              <div className="notice notice-error">
                {whyItEnded(job.data.state, job.data.resultCode ?? null, last?.detail ?? null).map(
                  (s) => (
                    <p key={s}>{s}</p>
                  ),
                )}
              </div>
            ) : null}
            <dl className="facts">
              <dt>Created</dt>
              <dd>{new Date(job.data.createdAt).toLocaleString()}</dd>
              <dt>Last change</dt>
              <dd>{new Date(job.data.updatedAt).toLocaleString()}</dd>
              {job.data.resultCode ? (
                <>
                  <dt>Result code</dt>
                  <dd>
                    <code>{job.data.resultCode}</code>
                  </dd>
                </>
              ) : null}
              {command.data ? (
                <>
                  <dt>Command</dt>
                  <dd>
                    <code>{command.data.name}</code> {JSON.stringify(command.data.args)}, issued{" "}
                    {new Date(command.data.issuedAt).toLocaleString()}
                    {command.data.sentAt
                      ? `, fetched by the agent ${new Date(command.data.sentAt).toLocaleString()}`
                      : ", not yet fetched by the agent"}
                  </dd>
                </>
              ) : null}
            </dl>
            {command.isError ? <ErrorNote error={command.error} /> : null}
          </section>
          <section className="panel" aria-labelledby="events-title">
            <h2 id="events-title">Event history</h2>
            {events.length === 0 ? (
              <p>
                No event yet: the agent reports once it starts. If this stays empty, check on the{" "}
                <Link to={`/t/${tenantId}/agents`}>Agents</Link> page that the agent is online.
              </p>
            ) : (
              <ol className="events">
                {events.map((e, i) => (
                  <li key={`${e.at}-${i}`}>
                    <time dateTime={e.at}>{new Date(e.at).toLocaleTimeString()}</time>{" "}
                    <strong>{EVENT_WORDS[e.kind]}</strong>
                    {e.progress !== null && e.progress !== undefined ? ` ${percent(e.progress)} %` : ""}
                    {e.code && e.code !== "ok" ? (
                      <>
                        {" "}
                        <code>{e.code}</code>
                      </>
                    ) : null}
                    {e.detail ? ` — ${e.detail}` : ""}
                    {counts(e.counts)}
                  </li>
                ))}
              </ol>
            )}
          </section>
        </>
      ) : null}
    </>
  );
}

function counts(value: unknown): string {
  if (!value || typeof value !== "object") return "";
  const parts = Object.entries(value as Record<string, unknown>).map(
    ([k, v]) => `${k.replaceAll("_", " ")} ${String(v)}`,
  );
  return parts.length ? ` (${parts.join(", ")})` : "";
}
