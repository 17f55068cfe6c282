/** The dashboard's figures shaped for its charts and its words. */

export interface DayPoint {
  /** A short label for the axis: "4 Dec". */
  label: string;
  succeeded: number;
  failed: number;
}

/** A UTC day (`YYYY-MM-DD`) as a short label, in UTC so it names the day the API means. */
export function dayLabel(day: string): string {
  const [y, m, d] = day.split("-").map(Number);
  if (!y || !m || !d) return day;
  return new Date(Date.UTC(y, m - 1, d)).toLocaleDateString(undefined, {
    day: "numeric",
    month: "short",
    timeZone: "UTC",
  });
}

export function dayPoints(days: { day: string; succeeded: number; failed: number }[]): DayPoint[] {
  return days.map((d) => ({ label: dayLabel(d.day), succeeded: d.succeeded, failed: d.failed }));
}

/** A sentence for the jobs chart's screen-reader text: the window's totals and its worst day. */
export function jobsSummary(days: { day: string; succeeded: number; failed: number }[]): string {
  const ok = days.reduce((n, d) => n + d.succeeded, 0);
  const bad = days.reduce((n, d) => n + d.failed, 0);
  const span = days.length === 1 ? "the last day" : `the last ${days.length} days`;
  if (ok + bad === 0) return `No job finished in ${span}.`;
  const worst = days.reduce((w, d) => (d.failed > w.failed ? d : w), days[0]!);
  const tail =
    worst.failed > 0 ? ` The most failures, ${worst.failed}, were on ${dayLabel(worst.day)}.` : "";
  return `In ${span} ${ok} jobs succeeded and ${bad} failed.${tail}`;
}

/** Energy as people read it on a bill: Wh below one kWh, kWh below one MWh, then MWh. */
export function formatEnergy(kwh: number): string {
  if (!Number.isFinite(kwh) || kwh < 0) return "unknown";
  if (kwh < 1) return `${Math.round(kwh * 1000)} Wh`;
  if (kwh < 1000) return `${kwh.toFixed(1)} kWh`;
  return `${(kwh / 1000).toFixed(2)} MWh`;
}

export interface History {
  days: string[];
  series: { name: string; values: (number | null)[] }[];
}

/** One figure of a chart over time: its name in the history (`agents.online`), the key it
 * takes in the chart's rows (recharts reads a dotted key as a path), its words. */
export interface Line {
  name: string;
  key: string;
  label: string;
}

export type HistoryRow = { label: string } & Record<string, number | string | null>;

/** The history as one row per day for a chart, each line's value under its key; a day the
 * cloud took no sample stays null, which the chart draws as a gap, not as a zero. */
export function historyRows(history: History, lines: Line[]): HistoryRow[] {
  const byName = new Map(history.series.map((s) => [s.name, s.values]));
  return history.days.map((day, i) => {
    const row: HistoryRow = { label: dayLabel(day) };
    for (const line of lines) row[line.key] = byName.get(line.name)?.[i] ?? null;
    return row;
  });
}

/** The lines of `lines` the history has a non-zero value for, so an empty state draws no
 * flat line at zero; `keep` lines stay whatever their values. */
export function linesWithData(history: History, lines: Line[], keep: string[] = []): Line[] {
  const byName = new Map(history.series.map((s) => [s.name, s.values]));
  return lines.filter(
    (l) => keep.includes(l.name) || (byName.get(l.name) ?? []).some((v) => v !== null && v !== 0),
  );
}

/** A sentence for a chart over time, for a screen reader: where each line began and where it
 * stands today, over the days that have a sample. */
export function trendSummary(history: History, lines: Line[], format: (n: number) => string = String): string {
  const byName = new Map(history.series.map((s) => [s.name, s.values]));
  const parts = lines.flatMap((line) => {
    const sampled = (byName.get(line.name) ?? []).filter((v): v is number => v !== null);
    if (sampled.length === 0) return [];
    const first = sampled[0]!;
    const last = sampled[sampled.length - 1]!;
    return first === last
      ? [`${line.label}: ${format(last)} throughout`]
      : [`${line.label}: from ${format(first)} to ${format(last)}`];
  });
  const n = history.days.length;
  if (parts.length === 0) return n === 1 ? "Nothing sampled today." : `Nothing sampled in the last ${n} days.`;
  return `${n === 1 ? "Today" : `Over the last ${n} days`}. ${parts.join("; ")}.`;
}
