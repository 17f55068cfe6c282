/** How many agents are in each state, as bars: loaded on its own (the chart library is most
 * of the portal's weight, and the table must not wait for it). */
import { Bar, BarChart, ResponsiveContainer, Tooltip, XAxis, YAxis } from "recharts";

export default function AgentsChart({ data }: { data: { state: string; agents: number }[] }) {
  return (
    <ResponsiveContainer width="100%" height={180}>
      <BarChart data={data}>
        <XAxis dataKey="state" interval={0} fontSize={11} />
        <YAxis allowDecimals={false} width={30} />
        <Tooltip />
        <Bar dataKey="agents" fill="#1f5fa8" isAnimationActive={false} />
      </BarChart>
    </ResponsiveContainer>
  );
}
