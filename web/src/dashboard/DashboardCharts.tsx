/** The dashboard's charts (recharts, loaded on its own like the Agents page's chart): jobs
 * finished per day, succeeded and failed stacked; VMs by life state; figures over time. */
import {
  Area,
  AreaChart,
  Bar,
  BarChart,
  Legend,
  Line,
  LineChart,
  ResponsiveContainer,
  Tooltip,
  XAxis,
  YAxis,
} from "recharts";
import type { DayPoint, HistoryRow, Line as Figure } from "./series";

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


const PALETTE = ["#1f5fa8", "#1d6b35", "#b35c00", "#6a3d9a", "#a3231a", "#3b7f8c", "#7a6a00", "#555"];

/** Figures over time, one line each (or stacked areas, for parts of a whole such as VMs by
 * life state); a day without a sample is a gap in the line, not a fall to zero. */
export function HistoryChart({
  rows,
  lines,
  stacked = false,
  format,
}: {
  rows: HistoryRow[];
  lines: Figure[];
  stacked?: boolean;
  format?: (n: number) => string;
}) {
  const tick = format ? (n: number) => format(n) : undefined;
  const tip = format ? (n: unknown) => (typeof n === "number" ? format(n) : String(n)) : undefined;
  const axes = (
    <>
      <XAxis dataKey="label" fontSize={11} minTickGap={8} />
      <YAxis allowDecimals={false} width={format ? 72 : 34} tickFormatter={tick} fontSize={11} />
      <Tooltip formatter={tip} />
      <Legend />
    </>
  );
  return (
    <ResponsiveContainer width="100%" height={220}>
      {stacked ? (
        <AreaChart data={rows}>
          {axes}
          {lines.map((l, i) => (
            <Area
              key={l.key}
              dataKey={l.key}
              name={l.label}
              stackId="all"
              stroke={PALETTE[i % PALETTE.length]}
              fill={PALETTE[i % PALETTE.length]}
              isAnimationActive={false}
            />
          ))}
        </AreaChart>
      ) : (
        <LineChart data={rows}>
          {axes}
          {lines.map((l, i) => (
            <Line
              key={l.key}
              dataKey={l.key}
              name={l.label}
              stroke={PALETTE[i % PALETTE.length]}
              strokeWidth={2}
              dot={{ r: 2 }}
              isAnimationActive={false}
            />
          ))}
        </LineChart>
      )}
    </ResponsiveContainer>
  );
}
