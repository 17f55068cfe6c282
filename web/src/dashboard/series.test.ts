import { describe, expect, it } from "vitest";
import { dayLabel, formatEnergy, jobsSummary } from "./series";

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
