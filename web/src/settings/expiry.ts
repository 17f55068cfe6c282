/** The API token's expiry: a few lengths to pick from, or a date of one's own, turned into
 * the whole days the API takes (`expiresInDays`, 1 to 366). */
export const MAX_DAYS = 366;

export const PRESETS: { days: number; label: string }[] = [
  { days: 7, label: "7 days" },
  { days: 30, label: "30 days" },
  { days: 90, label: "90 days" },
  { days: 366, label: "1 year (the longest)" },
];

export type Expiry = { ok: true; days: number; until: Date } | { ok: false; error: string };

const DAY_MS = 24 * 60 * 60 * 1000;

/** `choice` is a preset's day count as text, or "date" with `date` (YYYY-MM-DD, the
 * browser's date input) naming the last day the token works, in local time. */
export function expiry(choice: string, date: string, now: Date): Expiry {
  if (choice !== "date") {
    const days = Number(choice);
    if (!Number.isInteger(days) || days < 1 || days > MAX_DAYS) {
      return { ok: false, error: "Pick how long the token works." };
    }
    return { ok: true, days, until: new Date(now.getTime() + days * DAY_MS) };
  }
  const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(date);
  if (!match) return { ok: false, error: "Enter the last day the token works." };
  // Through the end of that day: the token works on the day named.
  const end = new Date(Number(match[1]), Number(match[2]) - 1, Number(match[3]) + 1);
  if (Number.isNaN(end.getTime())) return { ok: false, error: "That is not a date." };
  const days = Math.ceil((end.getTime() - now.getTime()) / DAY_MS);
  if (days < 1) return { ok: false, error: "Pick a day after today." };
  if (days > MAX_DAYS) {
    return { ok: false, error: `A token works at most ${MAX_DAYS} days: pick an earlier day.` };
  }
  return { ok: true, days, until: new Date(now.getTime() + days * DAY_MS) };
}
