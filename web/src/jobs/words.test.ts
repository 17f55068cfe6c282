import { describe, expect, it } from "vitest";
import { isOpen, percent, whyItEnded } from "./words";

describe("whyItEnded", () => {
  it("says nothing for a job that succeeded or still runs", () => {
    expect(whyItEnded("SUCCEEDED", "ok", null)).toEqual([]);
    expect(whyItEnded("RUNNING", null, null)).toEqual([]);
  });

  it("says what a known code means and what to do, then the agent's own words", () => {
    expect(whyItEnded("FAILED", "datastore_full", "ds1 has 2 GiB free")).toEqual([
      "The datastore has no room left: free space or pick another datastore.",
      "The agent said: ds1 has 2 GiB free",
    ]);
  });

  it("explains a state that is its own reason, and an unknown code in words", () => {
    const expired = whyItEnded("EXPIRED", null, null);
    expect(expired[0]).toMatch(/did not fetch the command before it expired/);
    expect(whyItEnded("FAILED", "stub_tampered", null)).toEqual([
      'The agent reported "stub tampered".',
    ]);
    expect(whyItEnded("FAILED", null, null)).toEqual([
      "The job failed without saying why; the agent's log on its machine may.",
    ]);
  });
});

describe("progress", () => {
  it("is a whole percentage, clamped, none as zero", () => {
    expect(percent(0.426)).toBe(43);
    expect(percent(1.7)).toBe(100);
    expect(percent(null)).toBe(0);
  });
  it("polls only open jobs", () => {
    expect(isOpen("PENDING") && isOpen("RUNNING")).toBe(true);
    expect(isOpen("TIMED_OUT")).toBe(false);
  });
});
