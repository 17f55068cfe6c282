/** Jobs in words: what each state means to the person waiting, and what an agent's result
 * code means and what to do about it. */
import type { JobState } from "../gql/graphql";

export const STATE_WORDS: Record<JobState, string> = {
  PENDING: "Waiting for the agent",
  RUNNING: "Running",
  SUCCEEDED: "Succeeded",
  FAILED: "Failed",
  REJECTED: "Refused by the agent",
  EXPIRED: "Expired before the agent took it",
  TIMED_OUT: "Timed out",
  CANCELLED: "Cancelled",
};

export function isOpen(state: JobState): boolean {
  return state === "PENDING" || state === "RUNNING";
}

export function isBad(state: JobState): boolean {
  return !isOpen(state) && state !== "SUCCEEDED";
}

/** Why a job in this state ended, when the state says more than its code. */
const STATE_WHY: Partial<Record<JobState, string>> = {
  EXPIRED:
    "The agent did not fetch the command before it expired: check on the Agents page that the agent is online, then issue the command again.",
  TIMED_OUT:
    "The agent took the command but reported no end in time: it may have stopped or lost its link. Look at the agent's machine, then issue the command again.",
  REJECTED:
    "The agent refused the command before running it; the reason follows.",
  CANCELLED: "The command was cancelled before it finished.",
};

/** The codes that say most, in words with a next step; others are shown with the agent's
 * own detail. */
const CODE_WORDS: Record<string, string> = {
  agent_error:
    "The agent hit an error of its own while running the command: its log on the machine says more.",
  interrupted: "The agent restarted while running the command; issue it again.",
  expired: "The command expired before the agent ran it.",
  unknown_command:
    "The agent does not know this command: its module may be missing or older than the cloud's. Update the agent.",
  undeclared: "The module reported a code it does not declare; update the agent.",
  bad_args: "The command's arguments were not valid for the agent's module.",
  not_found: "The agent did not find what the command names.",
  flow_mode_forbids:
    "The tenant's or the site's flow mode does not let this go up: widen it in Settings if you mean to.",
  requested_failure: "The command asked to fail, and did (a test of the noop module).",
  endpoint_unreachable:
    "The agent could not reach the hypervisor: check the endpoint's address and the network from the agent's machine.",
  login_failed:
    "The hypervisor refused the agent's credentials: set them again with `vm settings` on the agent.",
  datastore_full: "The datastore has no room left: free space or pick another datastore.",
  repository_full: "The archive repository is full: give it more room or prune old archives.",
  repository_unreachable:
    "The agent could not reach the archive repository: check its address and credentials.",
  over_budget:
    "The action is past the policy's budget for this window: approve it, or wait for the window to pass.",
  refused_by_policy: "The policy in force does not allow this action for this VM.",
  refused_by_safety_net: "The agent's safety net refused the action for this VM.",
  feature_locked: "The tenant's plan does not unlock this feature.",
  vm_not_found: "The hypervisor no longer has this VM.",
  timeout: "The hypervisor did not finish in time: try again, or look at its own task list.",
  busy: "Something else is running on this VM: try again once it is done.",
  no_storage: "The policy names no archive storage: set `archive.storage` in the vm-lifecycle policy.",
};

/** A finished job's outcome as sentences: what went wrong and what to do, then the agent's
 * own words when it gave any. Empty for a job that succeeded or is still open. */
export function whyItEnded(state: JobState, code: string | null, detail: string | null): string[] {
  if (!isBad(state)) return [];
  const out: string[] = [];
  const why = STATE_WHY[state];
  if (why) out.push(why);
  if (code && code !== "ok") {
    out.push(CODE_WORDS[code] ?? `The agent reported "${code.replaceAll("_", " ")}".`);
  }
  if (detail) out.push(`The agent said: ${detail}`);
  if (out.length === 0) out.push("The job failed without saying why; the agent's log on its machine may.");
  return out;
}

/** A progress fraction (0 to 1) as a whole percentage, clamped. */
export function percent(progress: number | null | undefined): number {
  if (progress === null || progress === undefined || Number.isNaN(progress)) return 0;
  return Math.round(Math.min(1, Math.max(0, progress)) * 100);
}
