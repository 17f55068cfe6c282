/** A job as it moves: the one place the Job page gets its data, so polling can give way to a
 * subscription without the page changing. For now it asks the API every second while the
 * job is open, and stops once it has finished. */
import { useQuery } from "@tanstack/react-query";
import { pick } from "../api/errors";
import { request } from "../api/graphql";
import { isOpen } from "./words";
import { JobQuery } from "./queries";

export const POLL_MS = 1000;

export function useJob(jobId: string) {
  return useQuery({
    queryKey: ["job", jobId],
    queryFn: async () => pick((await request(JobQuery, { id: jobId })).job, "Job"),
    refetchInterval: (query) => {
      const job = query.state.data;
      return job && !isOpen(job.state) ? false : POLL_MS;
    },
  });
}
