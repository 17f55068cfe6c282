"""The portal's sign-in over HTTP: routes under /auth, and the edge that turns a bearer
token or a session cookie into one principal."""
