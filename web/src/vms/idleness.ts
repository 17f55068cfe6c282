/** A VM's idleness judgement shaped for its page: one chart per signal, against its
 * threshold, and the sentence a screen reader gets instead of the chart. */
import { dayLabel } from "../dashboard/series";

export interface Judged {
  thresholds: { signal: string; value: number }[];
  days: { day: string; figures: { signal: string; value: number }[] }[];
}

export const SIGNAL_WORDS: Record<string, { name: string; unit: string }> = {
  cpu: { name: "CPU", unit: "%" },
  disk: { name: "Disk", unit: " KB/s" },
  net: { name: "Network", unit: " KB/s" },
  apps: { name: "Application processes", unit: "" },
};

export function signalWords(signal: string): { name: string; unit: string } {
  return SIGNAL_WORDS[signal] ?? { name: signal, unit: "" };
}

export interface SignalSeries {
  signal: string;
  threshold: number;
  /** One point per judged day, oldest first; null where that day had no sample of it. */
  points: { label: string; value: number | null }[];
}

/** One series per signal that has a threshold, in the thresholds' order. */
export function signalSeries(judged: Judged): SignalSeries[] {
  return judged.thresholds.map((t) => ({
    signal: t.signal,
    threshold: t.value,
    points: judged.days.map((d) => ({
      label: dayLabel(d.day.slice(0, 10)),
      value: d.figures.find((f) => f.signal === t.signal)?.value ?? null,
    })),
  }));
}

/** How the days compare with the threshold, in words: how many stayed under, and the
 * highest day. */
export function seriesSummary(s: SignalSeries): string {
  const { name, unit } = signalWords(s.signal);
  const known = s.points.filter((p): p is { label: string; value: number } => p.value !== null);
  if (known.length === 0) return `${name}: no day had samples.`;
  const under = known.filter((p) => p.value < s.threshold).length;
  const top = known.reduce((a, b) => (b.value > a.value ? b : a));
  const days = known.length === 1 ? "day" : "days";
  return `${name}: ${under} of ${known.length} ${days} under the threshold of ${s.threshold}${unit}; the highest, ${top.value}${unit}, on ${top.label}.`;
}
