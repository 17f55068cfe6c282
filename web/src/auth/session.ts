/** The signed-in user as the whole portal reads it: one react-query entry, refetched after a
 * sign-in or sign-out, and dropped when any call finds the session ended. */
import { useQuery, useQueryClient } from "@tanstack/react-query";
import { fetchMe, type User } from "../api/auth";

export const ME_KEY = ["auth", "me"] as const;

export function useMe() {
  return useQuery<User | null>({ queryKey: ME_KEY, queryFn: fetchMe, staleTime: 60_000 });
}

export function useSessionReset() {
  const client = useQueryClient();
  return async () => {
    client.removeQueries({ predicate: (q) => q.queryKey[0] !== "auth" });
    await client.invalidateQueries({ queryKey: ME_KEY });
  };
}
