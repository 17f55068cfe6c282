/** A signal's judged days against its threshold (recharts, loaded on its own as the
 * dashboard's charts are): a day under the dashed line counted towards idle. */
import {
  CartesianGrid,
  Line,
  LineChart,
  ReferenceLine,
  ResponsiveContainer,
  Tooltip,
  XAxis,
  YAxis,
} from "recharts";
import { type SignalSeries, signalWords } from "./idleness";

export default function SignalChart({ series }: { series: SignalSeries }) {
  const { name, unit } = signalWords(series.signal);
  const format = (n: unknown) => (typeof n === "number" ? `${n}${unit}` : String(n));
  return (
    <ResponsiveContainer width="100%" height={200}>
      <LineChart data={series.points}>
        <CartesianGrid strokeDasharray="2 4" vertical={false} />
        <XAxis dataKey="label" fontSize={11} minTickGap={8} />
        <YAxis width={48} fontSize={11} tickFormatter={format} />
        <Tooltip formatter={format} />
        <ReferenceLine
          y={series.threshold}
          stroke="#a3231a"
          strokeDasharray="6 3"
          label={{ value: `threshold ${format(series.threshold)}`, position: "insideTopRight", fontSize: 11 }}
        />
        <Line
          dataKey="value"
          name={name}
          stroke="#1f5fa8"
          strokeWidth={2}
          dot={{ r: 2 }}
          isAnimationActive={false}
        />
      </LineChart>
    </ResponsiveContainer>
  );
}
