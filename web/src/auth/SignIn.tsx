/** The sign-in page: the identity provider's button when the cloud has OIDC, a password form
 * when it offers one (the embedded default), and a plain sentence when it has neither. */
import { useQuery } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { fetchConfig, loginUrl, passwordSignIn } from "../api/auth";
import { describe } from "../api/errors";
import { ErrorNote, Loading } from "../ui/Notice";
import { useTitle } from "../ui/title";
import { useSessionReset } from "./session";

export function SignIn({ returnTo }: { returnTo: string }) {
  useTitle("Sign in");
  const config = useQuery({ queryKey: ["auth", "config"], queryFn: fetchConfig });
  return (
    <main className="signin" aria-labelledby="signin-title">
      <h1 id="signin-title">Sign in to Dockyard</h1>
      {config.isPending ? <Loading what="the sign-in options" /> : null}
      {config.isError ? <ErrorNote error={config.error} retry={() => void config.refetch()} /> : null}
      {config.data?.kind === "absent" ? <NoSignIn /> : null}
      {config.data?.kind === "ok" ? (
        <>
          {config.data.config.oidc ? (
            <a className="button primary" href={loginUrl(returnTo)}>
              Sign in with your identity provider
            </a>
          ) : null}
          {config.data.config.password ? <PasswordForm /> : null}
          {!config.data.config.oidc && !config.data.config.password ? <NoSignIn /> : null}
        </>
      ) : null}
    </main>
  );
}

function NoSignIn() {
  return (
    <div className="notice notice-error" role="alert">
      <p>
        This cloud offers no sign-in for the portal yet: its <code>/auth</code> routes are not
        there or have no method enabled. Ask your operator to configure an identity provider.
      </p>
      <p>
        Until then, the API answers at <a href="/graphql">/graphql</a> with an API token.
      </p>
    </div>
  );
}

function PasswordForm() {
  const reset = useSessionReset();
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function submit(e: FormEvent<HTMLFormElement>) {
    e.preventDefault();
    const form = new FormData(e.currentTarget);
    setBusy(true);
    setError(null);
    try {
      await passwordSignIn(String(form.get("email") ?? ""), String(form.get("password") ?? ""));
      await reset();
    } catch (err) {
      setError(describe(err));
    } finally {
      setBusy(false);
    }
  }

  return (
    <form className="stack" onSubmit={(e) => void submit(e)} aria-label="Sign in with a password">
      <label htmlFor="signin-email">Email</label>
      <input id="signin-email" name="email" type="email" autoComplete="username" required />
      <label htmlFor="signin-password">Password</label>
      <input
        id="signin-password"
        name="password"
        type="password"
        autoComplete="current-password"
        required
      />
      {error ? (
        <p className="field-error" role="alert">
          {error}
        </p>
      ) : null}
      <button type="submit" className="primary" disabled={busy}>
        {busy ? "Signing in…" : "Sign in"}
      </button>
    </form>
  );
}
