/** Commands and jobs: the tenant's recent jobs, newest first, each with its agent, its
 * state in words and, while running, its progress; open ones refresh every few seconds. */
import { useQuery } from "@tanstack/react-query";
import { Link, useParams } from "react-router";
import { pick } from "../api/errors";
import { request } from "../api/graphql";
import { EmptyState, ErrorNote, Loading } from "../ui/Notice";
import { SimpleTable } from "../ui/TableWrap";
import { When } from "../ui/When";
import { useTitle } from "../ui/title";
import { Progress } from "./Progress";
import { JobsQuery } from "./queries";
import { STATE_WORDS, isBad, isOpen } from "./words";

export function JobsPage() {
  const { tenantId = "" } = useParams();
  useTitle("Jobs");
  const jobs = useQuery({
    queryKey: ["jobs", tenantId],
    queryFn: async () => {
      const answer = await request(JobsQuery, { tenantId, first: 200 });
      const agents = pick(answer.agents, "AgentConnection").edges.map((e) => e.node);
      return {
        jobs: pick(answer.jobs, "JobConnection").edges.map((e) => e.node),
        agentName: new Map(agents.map((a) => [a.id, a.name])),
      };
    },
    refetchInterval: (q) => (q.state.data?.jobs.some((j) => isOpen(j.state)) ? 3000 : 30_000),
  });

  return (
    <>
      <h1>Jobs</h1>
      <p>
        Each command an agent runs is a job here: what it is, where it is, and how it ended.
        The newest 200 show.
      </p>
      {jobs.isPending ? <Loading what="jobs" /> : null}
      {jobs.isError ? <ErrorNote error={jobs.error} retry={() => void jobs.refetch()} /> : null}
      {jobs.data && jobs.data.jobs.length === 0 ? (
        <EmptyState title="No job yet">
          <p>
            A job starts when a command goes to an agent: power a VM from the{" "}
            <Link to={`/t/${tenantId}/vms`}>VMs</Link> page, or issue a command through the API.
          </p>
        </EmptyState>
      ) : null}
      {jobs.data && jobs.data.jobs.length > 0 ? (
        <SimpleTable
          label="Jobs"
          caption="Jobs of this tenant, newest first"
          columns={["Job", "Agent", "State", "Progress", "Started"]}
        >
          {jobs.data.jobs.map((j) => (
            <tr key={j.id}>
              <td>
                <Link to={j.id}>{j.kind}</Link>
              </td>
              <td>{jobs.data.agentName.get(j.agentId) ?? "an agent no longer listed"}</td>
              <td>
                <span className={`badge job-${j.state.toLowerCase()}${isBad(j.state) ? " job-bad" : ""}`}>
                  {STATE_WORDS[j.state]}
                </span>
              </td>
              <td>
                {isOpen(j.state) ? (
                  <Progress value={j.progress} label={`Progress of ${j.kind}`} />
                ) : j.resultCode && j.resultCode !== "ok" ? (
                  <code>{j.resultCode}</code>
                ) : (
                  "—"
                )}
              </td>
              <td>
                <When at={j.createdAt} />
              </td>
            </tr>
          ))}
        </SimpleTable>
      ) : null}
    </>
  );
}
