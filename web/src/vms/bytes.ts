/** Sizes in the binary units a datastore's own console uses (GiB, not GB). */
const UNITS = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];

export function formatBytes(n: number): string {
  if (!Number.isFinite(n) || n < 0) return "unknown";
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} bytes` : `${value.toFixed(1)} ${UNITS[unit]}`;
}

/** What an archived VM's icon tells on hover: when, and what it freed and costs. */
export function archiveSummary(archive: {
  archivedAt: string;
  sizeBefore: number;
  storedBytes: number;
}): string {
  const when = new Date(archive.archivedAt).toLocaleString();
  return `Archived ${when}: ${formatBytes(archive.sizeBefore)} freed on the datastore, ${formatBytes(archive.storedBytes)} stored`;
}
