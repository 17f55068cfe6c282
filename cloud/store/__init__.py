"""Tables, sessions, tenant scoping and migrations. Nothing here knows HTTP or GraphQL."""
