/** The cloud's sign-in routes under /auth (its own contract, beside GraphQL):
 * config, the signed-in user, password sign-in (embedded default only) and sign-out. */
import { postHeaders } from "./cookies";
import { ApiError, UNREACHABLE, httpError } from "./errors";

export interface AuthConfig {
  oidc: boolean;
  password: boolean;
}

/** What the portal shows when the cloud has no sign-in routes at all. */
export type ConfigAnswer = { kind: "ok"; config: AuthConfig } | { kind: "absent" };

/** One grant as /auth/me lists it: a tenant may come twice, once `direct` and once
 * through its MSP (`via` "msp"), each with its own role. */
export interface Membership {
  tenantId: string;
  tenantName: string;
  role: string;
  via?: "direct" | "msp";
  archived?: boolean;
}

export interface User {
  id: string;
  email: string;
  name: string;
  memberships: Membership[];
}

async function call(path: string, init: RequestInit = {}): Promise<Response> {
  try {
    return await fetch(path, { credentials: "same-origin", ...init });
  } catch {
    throw UNREACHABLE;
  }
}

export async function fetchConfig(): Promise<ConfigAnswer> {
  const response = await call("/auth/config", { headers: { Accept: "application/json" } });
  if (response.status === 404) return { kind: "absent" };
  if (!response.ok) throw httpError(response.status);
  return { kind: "ok", config: (await response.json()) as AuthConfig };
}

/** The signed-in user, or null when there is no session (401, or no /auth routes: 404). */
export async function fetchMe(): Promise<User | null> {
  const response = await call("/auth/me", { headers: { Accept: "application/json" } });
  if (response.status === 401 || response.status === 404) return null;
  if (!response.ok) throw httpError(response.status);
  return (await response.json()) as User;
}

export async function passwordSignIn(email: string, password: string): Promise<void> {
  const response = await call("/auth/password", {
    method: "POST",
    headers: postHeaders({ "Content-Type": "application/json", Accept: "application/json" }),
    body: JSON.stringify({ email, password }),
  });
  if (response.status === 401 || response.status === 400) {
    throw new ApiError("That email and password do not match an account: check both and try again.");
  }
  if (response.status === 404) {
    throw new ApiError("This cloud offers no password sign-in: use your identity provider.");
  }
  if (!response.ok) throw httpError(response.status);
}

export async function signOut(): Promise<void> {
  const response = await call("/auth/logout", { method: "POST", headers: postHeaders() });
  if (!response.ok && response.status !== 401) throw httpError(response.status);
}

/** Where the identity provider's sign-in starts; it comes back to the page the user was on. */
export function loginUrl(returnTo: string): string {
  const safe = returnTo.startsWith("/portal/") || returnTo === "/portal" ? returnTo : "/portal/";
  return `/auth/login?return_to=${encodeURIComponent(safe)}`;
}
