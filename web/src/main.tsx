import { MutationCache, QueryCache, QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { RouterProvider } from "react-router";
import { ApiError } from "./api/errors";
import { ME_KEY } from "./auth/session";
import { router } from "./App";
import "./styles.css";

// Any call that finds the session ended sends the user back to the sign-in page.
function onSignedOut(error: unknown) {
  if (error instanceof ApiError && error.kind === "signed-out") {
    void client.invalidateQueries({ queryKey: ME_KEY });
  }
}

const client: QueryClient = new QueryClient({
  queryCache: new QueryCache({ onError: onSignedOut }),
  mutationCache: new MutationCache({ onError: onSignedOut }),
  defaultOptions: {
    queries: {
      // A refused or signed-out answer will not change on a retry.
      retry: (count, error) =>
        !(error instanceof ApiError && error.kind !== "unreachable") && count < 2,
    },
  },
});

const root = document.getElementById("root");
if (root) {
  createRoot(root).render(
    <StrictMode>
      <QueryClientProvider client={client}>
        <RouterProvider router={router()} />
      </QueryClientProvider>
    </StrictMode>,
  );
}
