/** The CSRF token the cloud sets in the readable cookie `dockyard_csrf`; the portal echoes it
 * as `X-CSRF-Token` on every POST so a cross-site form cannot borrow the session cookie. */
export const CSRF_COOKIE = "dockyard_csrf";
export const CSRF_HEADER = "X-CSRF-Token";

export function readCookie(name: string, cookies: string = document.cookie): string | null {
  for (const part of cookies.split(";")) {
    const eq = part.indexOf("=");
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() === name) {
      return decodeURIComponent(part.slice(eq + 1).trim());
    }
  }
  return null;
}

/** Headers for a POST: the CSRF token when the cloud has set one. */
export function postHeaders(extra: Record<string, string> = {}): Record<string, string> {
  const token = readCookie(CSRF_COOKIE);
  return token ? { ...extra, [CSRF_HEADER]: token } : { ...extra };
}
