/** One VM: where it is in its life cycle, where each agent sees it, and the agent's last
 * idleness judgement: its reasons and, per signal, the judged days against the threshold. */
import { useQuery } from "@tanstack/react-query";
import { Suspense, lazy } from "react";
import { Link, useParams } from "react-router";
import { pick } from "../api/errors";
import { request } from "../api/graphql";
import { dayLabel } from "../dashboard/series";
import type { IdleState } from "../gql/graphql";
import { EmptyState, ErrorNote, Loading } from "../ui/Notice";
import { SimpleTable } from "../ui/TableWrap";
import { When } from "../ui/When";
import { useTitle } from "../ui/title";
import { archiveSummary } from "./bytes";
import { seriesSummary, signalSeries, signalWords } from "./idleness";
import { VmQuery } from "./queries";
import { LIFE_LABEL } from "./vmActions";

const SignalChart = lazy(() => import("./VmCharts"));

const IDLE_WORDS: Record<IdleState, string> = {
  ACTIVE: "Active",
  IDLE: "Idle",
  UNKNOWN: "Not known (too few samples)",
  EXCLUDED: "Excluded",
  MAINTENANCE: "In maintenance",
};

export function VmPage() {
  const { tenantId = "", vmId = "" } = useParams();
  const got = useQuery({
    queryKey: ["vm", vmId],
    queryFn: async () => pick((await request(VmQuery, { id: vmId })).vm, "Vm"),
    refetchInterval: 30_000,
  });
  const vm = got.data;
  useTitle(vm ? `VM ${vm.name}` : "VM");
  const idle = vm?.idleness ?? null;
  return (
    <>
      <p className="crumbs">
        <Link to={`/t/${tenantId}/vms`}>VMs</Link>
      </p>
      {got.isPending ? <Loading what="the VM" /> : null}
      {got.isError ? <ErrorNote error={got.error} retry={() => void got.refetch()} /> : null}
      {vm ? (
        <>
          <h1>{vm.name}</h1>
          <dl className="facts">
            <dt>Life state</dt>
            <dd>
              <span className={`badge life-${vm.lifeState.toLowerCase()}`}>{LIFE_LABEL[vm.lifeState]}</span>
              {vm.lifeReason ? ` ${vm.lifeReason}` : null}
            </dd>
            {vm.archive ? (
              <>
                <dt>Archive</dt>
                <dd>{archiveSummary(vm.archive)}</dd>
              </>
            ) : null}
            {vm.conflict ? (
              <>
                <dt>Conflict</dt>
                <dd>{vm.conflict}</dd>
              </>
            ) : null}
          </dl>
          <section className="vm-section" aria-labelledby="idleness-title">
            <h2 id="idleness-title">Idleness</h2>
            {idle === null ? (
              <EmptyState title="Not judged yet">
                <p>
                  The agent judges a VM once it has a day of samples, and sends its judgement with
                  the inventory while the tenant's flow mode is metadata or wider.
                </p>
              </EmptyState>
            ) : (
              <>
                <p>
                  <strong>{IDLE_WORDS[idle.state]}</strong>, judged <When at={idle.at} /> over the UTC
                  days from {dayLabel(idle.windowStart.slice(0, 10))} until{" "}
                  {dayLabel(idle.windowEnd.slice(0, 10))}.
                </p>
                {idle.reasons.length > 0 ? (
                  <ul className="reasons" aria-label="Reasons">
                    {idle.reasons.map((r) => (
                      <li key={r}>{r}</li>
                    ))}
                  </ul>
                ) : null}
                <div className="split split-even">
                  {signalSeries(idle).map((s) => (
                    <figure key={s.signal} className="chart" aria-labelledby={`signal-${s.signal}`}>
                      <figcaption id={`signal-${s.signal}`}>
                        {signalWords(s.signal).name} per day, against its threshold
                      </figcaption>
                      <p className="sr-only">{seriesSummary(s)}</p>
                      <Suspense fallback={<Loading what="the chart" />}>
                        <SignalChart series={s} />
                      </Suspense>
                    </figure>
                  ))}
                </div>
              </>
            )}
          </section>
          <section className="vm-section" aria-labelledby="sightings-title">
            <h2 id="sightings-title">Where agents see it</h2>
            <SimpleTable
              label="Sightings"
              caption="Each agent's view of this VM, oldest first"
              columns={["Endpoint", "Id", "Power", "Host", "Owner", "Seen"]}
            >
              {vm.sightings.map((s) => (
                <tr key={s.id}>
                  <td>{s.endpoint}</td>
                  <td className="mono">{s.nativeId}</td>
                  <td>{s.powerState}</td>
                  <td>{s.host ?? "—"}</td>
                  <td>{s.owner ?? "—"}</td>
                  <td>
                    <When at={s.seenAt} />
                  </td>
                </tr>
              ))}
            </SimpleTable>
          </section>
        </>
      ) : null}
    </>
  );
}
