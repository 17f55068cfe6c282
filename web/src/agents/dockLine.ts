/** The line a site admin pastes on the agent's machine: the token goes to a file first, so it
 * stays out of the process list and the shell history's command line (`--token-file`). */
export const TOKEN_FILE = "dockyard-enrol.token";

/** Single-quoted for a POSIX shell: a quote inside is closed, escaped and reopened. */
export function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

export function dockLine(cloudUrl: string, secret: string, maxFlow: string): string {
  const flow = maxFlow.toLowerCase();
  const parts = [
    `umask 077 && printf '%s' ${shellQuote(secret)} > ${TOKEN_FILE}`,
    `dockyard-agent dock ${shellQuote(cloudUrl)} --token-file ${TOKEN_FILE}` +
      (flow === "config" ? "" : ` --max-flow ${flow}`),
    `rm ${TOKEN_FILE}`,
  ];
  return parts.join(" && ");
}
