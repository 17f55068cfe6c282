/** The dashboard's charts (recharts, loaded on its own like the Agents page's chart): jobs
 * finished per day, succeeded and failed stacked; VMs by life state. */
import { Bar, BarChart, Legend, ResponsiveContainer, Tooltip, XAxis, YAxis } from "recharts";
import type { DayPoint } from "./series";

export function JobsByDayChart({ data }: { data: DayPoint[] }) {
  return (
    <ResponsiveContainer width="100%" height={220}>
      <BarChart data={data}>
        <XAxis dataKey="label" fontSize={11} minTickGap={8} />
        <YAxis allowDecimals={false} width={34} />
        <Tooltip />
        <Legend />
        <Bar dataKey="succeeded" name="Succeeded" stackId="jobs" fill="#1d6b35" isAnimationActive={false} />
        <Bar dataKey="failed" name="Failed" stackId="jobs" fill="#a3231a" isAnimationActive={false} />
      </BarChart>
    </ResponsiveContainer>
  );
}

export function VmsByStateChart({ data }: { data: { state: string; vms: number }[] }) {
  return (
    <ResponsiveContainer width="100%" height={220}>
      <BarChart data={data} layout="vertical" margin={{ left: 16 }}>
        <XAxis type="number" allowDecimals={false} />
        <YAxis type="category" dataKey="state" width={100} fontSize={11} />
        <Tooltip />
        <Bar dataKey="vms" name="VMs" fill="#1f5fa8" isAnimationActive={false} />
      </BarChart>
    </ResponsiveContainer>
  );
}

