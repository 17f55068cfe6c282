"""Rules per concept. No HTTP, GraphQL or SQL driver here: callers hand in a scoped session."""
