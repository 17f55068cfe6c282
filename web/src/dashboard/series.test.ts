import { describe, expect, it } from "vitest";
import { dayLabel, formatEnergy, historyRows, jobsSummary, linesWithData, trendSummary } from "./series";

describe("the dashboard's series", () => {
  it("labels a UTC day as that day, whatever the browser's zone", () => {
    expect(dayLabel("2026-12-04")).toMatch(/4/);
    expect(dayLabel("2026-12-04")).toMatch(/Dec/);
    expect(dayLabel("nonsense")).toBe("nonsense");
  });
  it("sums the window for a screen reader, naming the worst day", () => {
    expect(
      jobsSummary([
        { day: "2026-12-03", succeeded: 2, failed: 1 },
        { day: "2026-12-04", succeeded: 5, failed: 3 },
      ]),
    ).toBe(
      `In the last 2 days 7 jobs succeeded and 4 failed. The most failures, 3, were on ${dayLabel("2026-12-04")}.`,
    );
    expect(jobsSummary([{ day: "2026-12-04", succeeded: 0, failed: 0 }])).toBe(
      "No job finished in the last day.",
    );
  });
});

describe("formatEnergy", () => {
  it("picks the unit a bill would", () => {
    expect(formatEnergy(0)).toBe("0 Wh");
    expect(formatEnergy(0.25)).toBe("250 Wh");
    expect(formatEnergy(12.345)).toBe("12.3 kWh");
    expect(formatEnergy(4321)).toBe("4.32 MWh");
    expect(formatEnergy(Number.NaN)).toBe("unknown");
  });
});

describe("the dashboard's history", () => {
  const history = {
    days: ["2026-12-01", "2026-12-02", "2026-12-03"],
    series: [
      { name: "agents.online", values: [2, null, 3] },
      { name: "agents.quiet", values: [0, null, 0] },
      { name: "vms.archived", values: [null, null, 1] },
    ],
  };
  const lines = [
    { name: "agents.online", key: "online", label: "Online" },
    { name: "agents.quiet", key: "quiet", label: "Quiet" },
    { name: "vms.archived", key: "archived", label: "Archived" },
  ];
  it("makes one row a day, a day without a sample null rather than zero", () => {
    const rows = historyRows(history, lines);
    expect(rows.map((r) => r.online)).toEqual([2, null, 3]);
    expect(rows.map((r) => r.archived)).toEqual([null, null, 1]);
    expect(rows[0]!.label).toBe(dayLabel("2026-12-01"));
    expect(historyRows(history, [{ name: "vms.off", key: "off", label: "Off" }])[2]!.off).toBeNull();
  });
  it("leaves out lines that never left zero, unless asked to keep them", () => {
    expect(linesWithData(history, lines).map((l) => l.key)).toEqual(["online", "archived"]);
    expect(linesWithData(history, lines, ["agents.quiet"]).map((l) => l.key)).toEqual([
      "online",
      "quiet",
      "archived",
    ]);
  });
  it("says where each line began and where it stands", () => {
    expect(trendSummary(history, lines.slice(0, 2))).toBe(
      "Over the last 3 days. Online: from 2 to 3; Quiet: 0 throughout.",
    );
    expect(trendSummary({ days: ["2026-12-03"], series: [] }, lines)).toBe("Nothing sampled today.");
  });
});
