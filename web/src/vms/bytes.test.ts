import { describe, expect, it } from "vitest";
import { archiveSummary, formatBytes } from "./bytes";

describe("formatBytes", () => {
  it("uses the largest binary unit under 1024", () => {
    expect(formatBytes(512)).toBe("512 bytes");
    expect(formatBytes(1536)).toBe("1.5 KiB");
    expect(formatBytes(8 * 2 ** 30)).toBe("8.0 GiB");
  });
  it("says unknown for a figure that is not one", () => {
    expect(formatBytes(Number.NaN)).toBe("unknown");
    expect(formatBytes(-1)).toBe("unknown");
  });
  it("sums an archive up", () => {
    const text = archiveSummary({
      archivedAt: "2026-11-02T03:00:00Z",
      sizeBefore: 8 * 2 ** 30,
      storedBytes: 3 * 2 ** 30,
    });
    expect(text).toContain("8.0 GiB freed on the datastore, 3.0 GiB stored");
  });
});
