/** The dashboard's figures shaped for its charts and its words. */
import type { VmLifeState } from "../gql/graphql";

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

export const LIFE_WORDS: Record<VmLifeState, string> = {
  RUNNING: "Running",
  IDLE: "Idle",
  NOTICED: "Noticed",
  OFF: "Off",
  ARCHIVING: "Archiving",
  ARCHIVED: "Archived",
  RESTORING: "Restoring",
  ARCHIVE_FAILED: "Archive failed",
  RESTORE_FAILED: "Restore failed",
};

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
