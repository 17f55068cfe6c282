"""The GraphQL API at /graphql, for tenants, their MSPs and the portal."""
