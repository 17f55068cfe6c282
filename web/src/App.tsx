/** The portal's routes under /portal/: every page sits behind the sign-in gate, inside a
 * tenant (`/t/:tenantId/...`) so a link names what it shows. */
import { createContext, useContext } from "react";
import { Link, Navigate, Outlet, createBrowserRouter, useLocation } from "react-router";
import type { User } from "./api/auth";
import { AgentsPage } from "./agents/AgentsPage";
import { SignIn } from "./auth/SignIn";
import { useMe } from "./auth/session";
import { Shell } from "./shell/Shell";
import { EmptyState, ErrorNote, Loading } from "./ui/Notice";
import { VmPage } from "./vms/VmPage";
import { VmsPage } from "./vms/VmsPage";
import { PoliciesPage } from "./policies/PoliciesPage";
import { PolicyPage } from "./policies/PolicyPage";
import { JobsPage } from "./jobs/JobsPage";
import { JobPage } from "./jobs/JobPage";
import { SettingsPage } from "./settings/SettingsPage";
import { AuditPage } from "./audit/AuditPage";
import { DashboardPage } from "./dashboard/DashboardPage";

export const BASENAME = "/portal";

const UserContext = createContext<User | null>(null);

export function useUser(): User {
  const user = useContext(UserContext);
  if (!user) throw new Error("useUser outside the sign-in gate");
  return user;
}

function Gate() {
  const me = useMe();
  const location = useLocation();
  if (me.isPending) return <Loading what="your session" />;
  if (me.isError) {
    return (
      <main className="signin">
        <h1>Dockyard</h1>
        <ErrorNote error={me.error} retry={() => void me.refetch()} />
      </main>
    );
  }
  if (!me.data) return <SignIn returnTo={BASENAME + location.pathname + location.search} />;
  return (
    <UserContext.Provider value={me.data}>
      <Outlet />
    </UserContext.Provider>
  );
}

function Home() {
  const user = useUser();
  const first = user.memberships[0];
  if (!first) {
    return (
      <main className="signin">
        <EmptyState title="No tenant yet">
          <p>
            You are signed in as {user.email}, but no tenant has granted you a role. Ask a
            tenant's owner or your MSP to invite this email address.
          </p>
        </EmptyState>
      </main>
    );
  }
  return <Navigate to={`/t/${first.tenantId}/dashboard`} replace />;
}

function TenantShell() {
  return <Shell user={useUser()} />;
}

function NotFound() {
  return (
    <main className="signin">
      <EmptyState title="No such page">
        <p>
          The portal has no page at this address. Go to the <Link to="/">start page</Link>.
        </p>
      </EmptyState>
    </main>
  );
}

export function router() {
  return createBrowserRouter(
    [
      {
        element: <Gate />,
        children: [
          { index: true, element: <Home /> },
          {
            path: "t/:tenantId",
            element: <TenantShell />,
            children: [
              { index: true, element: <Navigate to="dashboard" replace /> },
              { path: "dashboard", element: <DashboardPage /> },
              { path: "agents", element: <AgentsPage /> },
              { path: "vms", element: <VmsPage /> },
              { path: "vms/:vmId", element: <VmPage /> },
              { path: "policies", element: <PoliciesPage /> },
              { path: "policies/:policyId", element: <PolicyPage /> },
              { path: "jobs", element: <JobsPage /> },
              { path: "jobs/:jobId", element: <JobPage /> },
              { path: "settings", element: <SettingsPage /> },
              { path: "audit", element: <AuditPage /> },
            ],
          },
          { path: "*", element: <NotFound /> },
        ],
      },
    ],
    { basename: BASENAME },
  );
}
