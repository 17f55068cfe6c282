import { describe, expect, it } from "vitest";
import { expiry } from "./expiry";
import { widens } from "./flowModes";

// A fixed moment: 4 December 2026, 10:00 local time.
const NOW = new Date(2026, 11, 4, 10, 0, 0);

describe("expiry", () => {
  it("takes a preset's days as they are", () => {
    const got = expiry("30", "", NOW);
    expect(got).toEqual({ ok: true, days: 30, until: new Date(2026, 11, 4 + 30, 10) });
  });

  it("counts a picked day through its end, so the token works on it", () => {
    expect(expiry("date", "2026-12-05", NOW)).toMatchObject({ ok: true, days: 2 });
    expect(expiry("date", "2026-12-04", NOW)).toMatchObject({ ok: true, days: 1 });
  });

  it("refuses a day gone by, a day past the cloud's limit, and no day at all", () => {
    expect(expiry("date", "2026-12-03", NOW)).toEqual({ ok: false, error: "Pick a day after today." });
    expect(expiry("date", "2028-01-01", NOW)).toEqual({
      ok: false,
      error: "A token works at most 366 days: pick an earlier day.",
    });
    expect(expiry("date", "", NOW)).toEqual({ ok: false, error: "Enter the last day the token works." });
    expect(expiry("400", "", NOW)).toEqual({ ok: false, error: "Pick how long the token works." });
  });
});

describe("widens", () => {
  it("knows config < metadata < data", () => {
    expect(widens("CONFIG", "DATA")).toBe(true);
    expect(widens("DATA", "METADATA")).toBe(false);
    expect(widens("METADATA", "METADATA")).toBe(false);
  });
});
