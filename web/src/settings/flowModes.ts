/** The flow modes in plain words: what crosses from a site to the cloud in each, and what
 * never does. The narrowest of the tenant's, the site's and the agent's own wins. */
import type { FlowMode } from "../gql/graphql";

export interface FlowWords {
  mode: FlowMode;
  title: string;
  summary: string;
  crosses: string[];
  stays: string[];
}

export const FLOW_MODES: FlowWords[] = [
  {
    mode: "CONFIG",
    title: "Config only",
    summary: "The cloud steers the agents; nothing about your machines leaves the site but codes and counts.",
    crosses: [
      "policies and commands, down to the agents",
      "that a command was received, ran, and how it ended, as a code from a fixed list",
      "counts (how many VMs were looked at, how many acted on)",
    ],
    stays: ["names of VMs, hosts and files", "sizes, times and owners", "any file content"],
  },
  {
    mode: "METADATA",
    title: "Metadata",
    summary: "The cloud also sees what your machines are, so it can show them and decide for them.",
    crosses: [
      "everything in Config only",
      "VM inventory: names, hosts, power states, owners, sizes and times",
      "idleness findings and the agents' own error messages",
    ],
    stays: ["any file content: disks and archives stay where the agent stores them"],
  },
  {
    mode: "DATA",
    title: "Data",
    summary: "File contents may go up too, to storage the cloud manages for the tenant.",
    crosses: [
      "everything in Metadata",
      "file contents, encrypted before they leave: archives and backups into the cloud's storage",
    ],
    stays: ["the archives' passphrase: contents are sealed on the site before they go up"],
  },
];

const RANK: Record<FlowMode, number> = { CONFIG: 0, METADATA: 1, DATA: 2 };

/** Widening lets more cross and needs the tenant's own owner; narrowing an admin. */
export function widens(from: FlowMode, to: FlowMode): boolean {
  return RANK[to] > RANK[from];
}
