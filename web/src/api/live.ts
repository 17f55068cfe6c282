/** Live changes: GraphQL subscriptions over one same-origin WebSocket (graphql-transport-ws,
 * the graphql-ws client), typed by codegen like every query. The socket carries the session
 * cookie by itself; the cloud checks the page's origin at the upgrade, and closes the socket
 * (4401) once the session ends, after which it is not reopened: the next query's 401 shows
 * sign-in. A lost socket is reopened with backoff, and each subscription then starts with a
 * RESYNC, on which a page reads again what it shows. */
import { type Client, createClient } from "graphql-ws";
import { useEffect, useRef } from "react";
import { graphql } from "../gql";
import type {
  PortalJobProgressSubscription,
  PortalTenantChangesSubscription,
  TypedDocumentString,
} from "../gql/graphql";
import { GRAPHQL_PATH } from "./graphql";

/** The close code the cloud sends when the socket's session or token no longer holds. */
export const SIGNED_OUT = 4401;

export const TenantChangesSubscription = graphql(`
  subscription PortalTenantChanges($tenantId: ID!) {
    tenantChanges(tenantId: $tenantId) {
      __typename
      ... on TenantChange {
        kind
        agent {
          id
        }
        job {
          id
        }
      }
      ... on Error {
        message
      }
    }
  }
`);

export const JobProgressSubscription = graphql(`
  subscription PortalJobProgress($jobId: ID!) {
    jobProgress(jobId: $jobId) {
      __typename
      ... on Job {
        id
        state
        progress
        resultCode
        updatedAt
      }
      ... on Error {
        message
      }
    }
  }
`);

type TenantChanges = PortalTenantChangesSubscription["tenantChanges"];
export type TenantChange = Extract<TenantChanges, { __typename: "TenantChange" }>;

/** The socket's address: this page's own host, ws: or wss: as the page is http: or https:. */
export function liveUrl(at: Pick<Location, "protocol" | "host"> = window.location): string {
  return `${at.protocol === "https:" ? "wss:" : "ws:"}//${at.host}${GRAPHQL_PATH}`;
}

/** Whether to open the socket again after it closed: not once the session has ended. */
export function reopens(closed: unknown): boolean {
  const code = (closed as { code?: unknown } | null)?.code;
  return code !== SIGNED_OUT;
}

/** The query keys a change makes stale (each page keys its queries by tenant); the
 * dashboard counts both agents and jobs. */
export function staleKeys(tenantId: string, change: Pick<TenantChange, "kind">): string[][] {
  const dashboard = ["dashboard", tenantId];
  switch (change.kind) {
    case "AGENT":
      return [["agents", tenantId], dashboard];
    case "JOB":
      return [["jobs", tenantId], dashboard];
    default:
      return [["agents", tenantId], ["jobs", tenantId], dashboard];
  }
}

let shared: Client | null = null;

function client(): Client {
  shared ??= createClient({
    url: liveUrl(),
    lazy: true, // open only while something subscribes
    keepAlive: 25_000, // a ping within proxies' idle time-outs (HAProxy's: 60 s)
    retryAttempts: 1_000,
    shouldRetry: reopens,
  });
  return shared;
}

/** Subscribe for as long as the component is mounted (or until `variables` change). */
export function useSubscription<R, V extends Record<string, unknown>>(
  document: TypedDocumentString<R, V>,
  variables: V,
  onData: (data: R) => void,
  enabled = true,
): void {
  const handler = useRef(onData);
  handler.current = onData;
  const key = JSON.stringify(variables);
  useEffect(() => {
    if (!enabled) return undefined;
    return client().subscribe<R>(
      { query: document.toString(), variables: JSON.parse(key) as V },
      {
        next: (message) => {
          if (message.data) handler.current(message.data);
        },
        error: () => undefined, // the socket reopens by itself; the pages also poll
        complete: () => undefined,
      },
    );
  }, [document, key, enabled]);
}

/** The tenant's changes; `onChange` is given each one this principal may see. */
export function useTenantChanges(
  tenantId: string,
  onChange: (change: TenantChange) => void,
): void {
  useSubscription(
    TenantChangesSubscription,
    { tenantId },
    (data) => {
      if (data.tenantChanges.__typename === "TenantChange") onChange(data.tenantChanges);
    },
    tenantId !== "",
  );
}

export type JobProgress = PortalJobProgressSubscription["jobProgress"];

/** A job's progress and state as the agent reports them, until it ends (for a progress
 * bar); another tenant's or a missing id answers `JobNotFound` once. */
export function useJobProgress(jobId: string, onProgress: (job: JobProgress) => void): void {
  useSubscription(
    JobProgressSubscription,
    { jobId },
    (data) => onProgress(data.jobProgress),
    jobId !== "",
  );
}
