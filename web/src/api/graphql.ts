/** The one way the portal speaks to the cloud's data: POST /graphql, the public API MSPs
 * automate with, over the session cookie (same origin) with the CSRF header. */
import type { TypedDocumentString } from "../gql/graphql";
import { postHeaders } from "./cookies";
import { ApiError, UNREACHABLE, httpError } from "./errors";

export const GRAPHQL_PATH = "/graphql";

interface GraphQLAnswer<R> {
  data?: R | null;
  errors?: { message: string }[];
}

export async function request<R, V>(
  document: TypedDocumentString<R, V>,
  variables: V,
): Promise<R> {
  let response: Response;
  try {
    response = await fetch(GRAPHQL_PATH, {
      method: "POST",
      credentials: "same-origin",
      headers: postHeaders({ "Content-Type": "application/json", Accept: "application/json" }),
      body: JSON.stringify({ query: document.toString(), variables }),
    });
  } catch {
    throw UNREACHABLE;
  }
  let answer: GraphQLAnswer<R> | null = null;
  try {
    answer = (await response.json()) as GraphQLAnswer<R>;
  } catch {
    answer = null;
  }
  if (!response.ok && (answer === null || !answer.errors?.length)) {
    throw httpError(response.status);
  }
  if (response.status === 401) throw httpError(401);
  if (answer?.errors?.length) {
    throw new ApiError(answer.errors.map((e) => e.message).join("; "));
  }
  if (!answer?.data) throw httpError(response.status);
  return answer.data;
}
