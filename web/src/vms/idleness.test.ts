import { describe, expect, it } from "vitest";
import { dayLabel } from "../dashboard/series";
import { seriesSummary, signalSeries } from "./idleness";

const judged = {
  thresholds: [
    { signal: "cpu", value: 5 },
    { signal: "net", value: 1 },
  ],
  days: [
    { day: "2026-06-01T00:00:00+00:00", figures: [{ signal: "cpu", value: 1.5 }] },
    {
      day: "2026-06-02T00:00:00+00:00",
      figures: [
        { signal: "cpu", value: 7.25 },
        { signal: "net", value: 0.5 },
      ],
    },
  ],
};

describe("a VM's idleness series", () => {
  it("gives each signal its days, a day without its samples null", () => {
    const [cpu, net] = signalSeries(judged);
    expect(cpu!.threshold).toBe(5);
    expect(cpu!.points.map((p) => p.value)).toEqual([1.5, 7.25]);
    expect(net!.points.map((p) => p.value)).toEqual([null, 0.5]);
    expect(cpu!.points[0]!.label).toBe(dayLabel("2026-06-01"));
  });
  it("says how the days compare with the threshold", () => {
    const [cpu, net] = signalSeries(judged);
    expect(seriesSummary(cpu!)).toBe(
      `CPU: 1 of 2 days under the threshold of 5%; the highest, 7.25%, on ${dayLabel("2026-06-02")}.`,
    );
    expect(seriesSummary(net!)).toBe(
      `Network: 1 of 1 day under the threshold of 1 KB/s; the highest, 0.5 KB/s, on ${dayLabel("2026-06-02")}.`,
    );
    expect(seriesSummary({ signal: "apps", threshold: 1, points: [] })).toBe(
      "Application processes: no day had samples.",
    );
  });
});
