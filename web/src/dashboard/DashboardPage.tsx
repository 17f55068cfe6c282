/** The dashboard: the tenant at a glance (agents, jobs, VMs, what archiving saved and gave
 * back) and, over time, the jobs finished each day and the figures' daily samples. */
import { useQuery, useQueryClient } from "@tanstack/react-query";
import { Suspense, lazy, useEffect, useRef, type ReactNode } from "react";
import { Link, useParams } from "react-router";
import { pick } from "../api/errors";
import { request } from "../api/graphql";
import { useTenantChanges } from "../api/live";
import { ErrorNote, Loading } from "../ui/Notice";
import { useTitle } from "../ui/title";
import { formatBytes } from "../vms/bytes";
import { LIFE_LABEL } from "../vms/vmActions";
import { DashboardQuery } from "./queries";
import type { VmLifeState } from "../gql/graphql";
import {
  type History,
  type Line,
  dayPoints,
  formatEnergy,
  historyRows,
  jobsSummary,
  linesWithData,
  trendSummary,
} from "./series";

const JobsByDayChart = lazy(() =>
  import("./DashboardCharts").then((m) => ({ default: m.JobsByDayChart })),
);
const VmsByStateChart = lazy(() =>
  import("./DashboardCharts").then((m) => ({ default: m.VmsByStateChart })),
);
const HistoryChart = lazy(() =>
  import("./DashboardCharts").then((m) => ({ default: m.HistoryChart })),
);
const DAYS = 14;

const AGENT_LINES: Line[] = [
  { name: "agents.online", key: "online", label: "Online" },
  { name: "agents.quiet", key: "quiet", label: "Quiet" },
];
const VM_LINES: Line[] = (Object.keys(LIFE_LABEL) as VmLifeState[]).map((state) => ({
  name: `vms.${state.toLowerCase()}`,
  key: state.toLowerCase(),
  label: LIFE_LABEL[state],
}));
const STORAGE_LINES: Line[] = [
  { name: "vms.stored_bytes", key: "stored", label: "Archives hold" },
  { name: "vms.saved_bytes", key: "saved", label: "Saved by dedup and compression" },
];
const RECLAIMED_LINES: Line[] = [{ name: "vms.vcpus_reclaimed", key: "vcpus", label: "vCPUs" }];

export function DashboardPage() {
  const { tenantId = "" } = useParams();
  useTitle("Dashboard");
  const got = useQuery({
    queryKey: ["dashboard", tenantId],
    queryFn: async () =>
      pick((await request(DashboardQuery, { tenantId, days: DAYS })).dashboard, "Dashboard"),
    refetchInterval: 30_000,
  });
  useLiveRefresh(tenantId);
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
                      .map((s) => `${LIFE_LABEL[s.state]}: ${s.count}`)
                      .join(", ")}
                  </p>
                  <Suspense fallback={<Loading what="the chart" />}>
                    <VmsByStateChart
                      data={d.vms.byState.map((s) => ({ state: LIFE_LABEL[s.state], vms: s.count }))}
                    />
                  </Suspense>
                </>
              )}
            </figure>
          </div>
          <h2 className="over-time">Over the last {DAYS} days</h2>
          <p className="hint">
            Each day shows the last of the samples the cloud takes through the day; today's point
            is the figure now. A gap is a day without a sample (the cloud was not running).
          </p>
          <div className="split split-even">
            <OverTime
              id="agents-history"
              title="Agents online and quiet"
              history={d.history}
              lines={AGENT_LINES}
              keep={["agents.online"]}
              empty="No agent yet: create an enrolment token on the Agents page."
            />
            <OverTime
              id="vms-history"
              title="VMs by life state"
              history={d.history}
              lines={VM_LINES}
              stacked
              empty="No VM reported in these days."
            />
            <OverTime
              id="storage-history"
              title="Archive storage"
              history={d.history}
              lines={STORAGE_LINES}
              format={formatBytes}
              empty="Nothing archived in these days."
            />
            <OverTime
              id="reclaimed-history"
              title="vCPUs reclaimed (VMs off or archived)"
              history={d.history}
              lines={RECLAIMED_LINES}
              empty="No VM was off or archived in these days."
            />
          </div>
        </>
      ) : null}
    </>
  );
}

/** An agent docking or going quiet, a job starting or ending, on any replica: the figures
 * are read again, at most once a second however many changes arrive together. */
function useLiveRefresh(tenantId: string) {
  const client = useQueryClient();
  const pending = useRef<number | null>(null);
  useEffect(
    () => () => {
      if (pending.current !== null) window.clearTimeout(pending.current);
    },
    [],
  );
  useTenantChanges(tenantId, () => {
    if (pending.current !== null) return;
    pending.current = window.setTimeout(() => {
      pending.current = null;
      void client.invalidateQueries({ queryKey: ["dashboard", tenantId] });
    }, 1000);
  });
}

function OverTime(props: {
  id: string;
  title: string;
  history: History;
  lines: Line[];
  keep?: string[];
  stacked?: boolean;
  format?: (n: number) => string;
  empty: string;
}) {
  const shown = linesWithData(props.history, props.lines, props.keep);
  return (
    <figure className="chart" aria-labelledby={props.id}>
      <figcaption id={props.id}>{props.title}</figcaption>
      {shown.length === 0 ? (
        <p>{props.empty}</p>
      ) : (
        <>
          <p className="sr-only">{trendSummary(props.history, shown, props.format)}</p>
          <Suspense fallback={<Loading what="the chart" />}>
            <HistoryChart
              rows={historyRows(props.history, shown)}
              lines={shown}
              stacked={props.stacked}
              format={props.format}
            />
          </Suspense>
        </>
      )}
    </figure>
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
