/** The dashboard: the tenant at a glance (agents, jobs, VMs, what archiving saved and gave
 * back) and, over time, the jobs finished each day. */
import { useQuery } from "@tanstack/react-query";
import { Suspense, lazy, type ReactNode } from "react";
import { Link, useParams } from "react-router";
import { pick } from "../api/errors";
import { request } from "../api/graphql";
import { ErrorNote, Loading } from "../ui/Notice";
import { useTitle } from "../ui/title";
import { formatBytes } from "../vms/bytes";
import { DashboardQuery } from "./queries";
import { LIFE_WORDS, dayPoints, formatEnergy, jobsSummary } from "./series";

const JobsByDayChart = lazy(() =>
  import("./DashboardCharts").then((m) => ({ default: m.JobsByDayChart })),
);
const VmsByStateChart = lazy(() =>
  import("./DashboardCharts").then((m) => ({ default: m.VmsByStateChart })),
);
const DAYS = 14;

export function DashboardPage() {
  const { tenantId = "" } = useParams();
  useTitle("Dashboard");
  const got = useQuery({
    queryKey: ["dashboard", tenantId],
    queryFn: async () =>
      pick((await request(DashboardQuery, { tenantId, days: DAYS })).dashboard, "Dashboard"),
    refetchInterval: 30_000,
  });
  const d = got.data;
  const vmTotal = d?.vms.byState.reduce((n, s) => n + s.count, 0) ?? 0;
  return (
    <>
      <h1>Dashboard</h1>
      {got.isPending ? <Loading what="the dashboard" /> : null}
      {got.isError ? <ErrorNote error={got.error} retry={() => void got.refetch()} /> : null}
      {d ? (
        <>
          <div className="cards">
            <Card title="Agents" to={`/t/${tenantId}/agents`}>
              <Figure n={d.agents.online} what="online" />
              <Figure n={d.agents.quiet} what="quiet" />
              <Figure n={d.agents.revoked} what="revoked" />
            </Card>
            <Card title="Jobs" to={`/t/${tenantId}/jobs`}>
              <Figure n={d.jobs.running} what="running" />
              <Figure n={d.jobs.pending} what="waiting" />
              <Figure n={d.jobs.failedLast24h} what="failed in 24 h" bad={d.jobs.failedLast24h > 0} />
              <Figure n={d.jobs.succeededLast24h} what="succeeded in 24 h" />
            </Card>
            <Card title="Storage" to={`/t/${tenantId}/vms`}>
              <Figure n={formatBytes(d.vms.storedBytes)} what="archives hold" />
              <Figure n={formatBytes(d.vms.savedBytes)} what="saved by dedup and compression" />
            </Card>
            <Card title="Reclaimed" to={`/t/${tenantId}/vms`}>
              <Figure n={d.vms.vcpusReclaimed} what="vCPUs" />
              <Figure n={formatBytes(d.vms.memoryMbReclaimed * 1024 * 1024)} what="memory" />
              <Figure n={formatBytes(d.vms.diskBytesReclaimed)} what="datastore space" />
              <Figure
                n={formatEnergy(d.vms.energyReclaimedKwh)}
                what={`energy (estimated; ${Math.round(d.vms.powerReclaimedWatts)} W now)`}
              />
            </Card>
          </div>
          <div className="split split-even">
            <figure className="chart" aria-labelledby="jobs-chart-title">
              <figcaption id="jobs-chart-title">Jobs finished per day (UTC), last {DAYS} days</figcaption>
              <p className="sr-only">{jobsSummary(d.jobsByDay)}</p>
              <Suspense fallback={<Loading what="the chart" />}>
                <JobsByDayChart data={dayPoints(d.jobsByDay)} />
              </Suspense>
            </figure>
            <figure className="chart" aria-labelledby="vms-chart-title">
              <figcaption id="vms-chart-title">VMs by life state</figcaption>
              {vmTotal === 0 ? (
                <p>
                  No VM reported yet: agents with the vm module send their inventory once the
                  tenant's flow mode is metadata or wider (see <Link to={`/t/${tenantId}/settings`}>Settings</Link>).
                </p>
              ) : (
                <>
                  <p className="sr-only">
                    {d.vms.byState
                      .filter((s) => s.count > 0)
                      .map((s) => `${LIFE_WORDS[s.state]}: ${s.count}`)
                      .join(", ")}
                  </p>
                  <Suspense fallback={<Loading what="the chart" />}>
                    <VmsByStateChart
                      data={d.vms.byState.map((s) => ({ state: LIFE_WORDS[s.state], vms: s.count }))}
                    />
                  </Suspense>
                </>
              )}
            </figure>
          </div>
        </>
      ) : null}
    </>
  );
}

function Card({ title, to, children }: { title: string; to: string; children: ReactNode }) {
  return (
    <section className="card" aria-label={title}>
      <h2>
        <Link to={to}>{title}</Link>
      </h2>
      <dl>{children}</dl>
    </section>
  );
}

function Figure({ n, what, bad }: { n: number | string; what: string; bad?: boolean }) {
  return (
    <div className={bad ? "figure figure-bad" : "figure"}>
      <dt>{what}</dt>
      <dd>{n}</dd>
    </div>
  );
}
