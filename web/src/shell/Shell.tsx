/** The app shell: a skip link, the navigation, the tenant switcher from the user's
 * memberships, and sign-out; the page itself renders in <main>. */
import { useState, type ChangeEvent } from "react";
import { NavLink, Outlet, useNavigate, useParams } from "react-router";
import { signOut, type User } from "../api/auth";
import { describe } from "../api/errors";
import { useSessionReset } from "../auth/session";
import { tenantChoices } from "./tenants";

export function Shell({ user }: { user: User }) {
  const { tenantId = "" } = useParams();
  const navigate = useNavigate();
  const reset = useSessionReset();
  const [error, setError] = useState<string | null>(null);

  function switchTenant(e: ChangeEvent<HTMLSelectElement>) {
    const page = window.location.pathname.split("/").slice(4).join("/") || "agents";
    void navigate(`/t/${e.target.value}/${page}`);
  }

  async function leave() {
    setError(null);
    try {
      await signOut();
      await reset();
    } catch (err) {
      setError(describe(err));
    }
  }

  return (
    <div className="shell">
      <a className="skip" href="#main">
        Skip to content
      </a>
      <header className="topbar">
        <span className="brand">Dockyard</span>
        <nav aria-label="Main">
          <ul>
            <li>
              <NavLink to={`/t/${tenantId}/dashboard`}>Dashboard</NavLink>
            </li>
            <li>
              <NavLink to={`/t/${tenantId}/agents`}>Agents</NavLink>
            </li>
            <li>
              <NavLink to={`/t/${tenantId}/vms`}>VMs</NavLink>
            </li>
            <li>
              <NavLink to={`/t/${tenantId}/policies`}>Policies</NavLink>
            </li>
            <li>
              <NavLink to={`/t/${tenantId}/jobs`}>Jobs</NavLink>
            </li>
            <li>
              <NavLink to={`/t/${tenantId}/audit`}>Audit log</NavLink>
            </li>
            <li>
              <NavLink to={`/t/${tenantId}/settings`}>Settings</NavLink>
            </li>
          </ul>
        </nav>
        <div className="account">
          <label htmlFor="tenant-switcher">Tenant</label>
          <select id="tenant-switcher" value={tenantId} onChange={switchTenant}>
            {tenantChoices(user.memberships).map((c) => (
              <option key={c.tenantId} value={c.tenantId}>
                {c.label}
              </option>
            ))}
          </select>
          <span className="who" title={user.email}>
            {user.name || user.email}
          </span>
          <button type="button" onClick={() => void leave()}>
            Sign out
          </button>
        </div>
      </header>
      {error ? (
        <p className="notice notice-error" role="alert">
          {error}
        </p>
      ) : null}
      <main id="main" tabIndex={-1}>
        <Outlet />
      </main>
    </div>
  );
}
