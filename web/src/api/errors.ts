/** Errors in words: each says what went wrong and what to do, never a status code alone. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly kind: "signed-out" | "refused" | "unreachable" | "server" | "answer" = "answer",
  ) {
    super(message);
    this.name = "ApiError";
  }
}

/** The sentence for an HTTP answer that is not a GraphQL result. */
export function httpError(status: number): ApiError {
  if (status === 401) {
    return new ApiError("Your session has ended: sign in again.", "signed-out");
  }
  if (status === 403) {
    return new ApiError(
      "The cloud refused the request (403): reload the page to get a fresh session token.",
      "refused",
    );
  }
  if (status === 413) {
    return new ApiError("The request was too large for the cloud (413).", "refused");
  }
  if (status === 429) {
    return new ApiError("Too many requests: wait a moment and try again (429).", "refused");
  }
  if (status >= 500) {
    return new ApiError(
      `The cloud failed to answer (${status}): try again; if it persists, tell your operator.`,
      "server",
    );
  }
  return new ApiError(`The cloud answered ${status}, which the portal did not expect.`, "server");
}

export const UNREACHABLE = new ApiError(
  "The cloud did not answer: check your connection and try again.",
  "unreachable",
);

/** A union result's expected member, else the error member's own sentence. */
export function pick<T extends { __typename: string }, K extends T["__typename"]>(
  value: T,
  typename: K,
): Extract<T, { __typename: K }> {
  if (value.__typename === typename) return value as Extract<T, { __typename: K }>;
  const message =
    "message" in value && typeof value.message === "string"
      ? value.message
      : `The cloud answered ${value.__typename} where the portal expected ${typename}.`;
  throw new ApiError(message);
}

export function describe(error: unknown): string {
  if (error instanceof Error) return error.message;
  return "Something went wrong that the portal cannot describe; reload the page.";
}
