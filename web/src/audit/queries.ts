/** The Audit log page's GraphQL operation, typed by codegen from the committed SDL. */
import { graphql } from "../gql";

export const AuditLogQuery = graphql(`
  query PortalAuditLog(
    $tenantId: ID!
    $first: Int!
    $after: String
    $action: String
    $outcome: String
    $actorKind: ActorKind
  ) {
    auditLog(
      tenantId: $tenantId
      first: $first
      after: $after
      action: $action
      outcome: $outcome
      actorKind: $actorKind
      newestFirst: true
    ) {
      __typename
      ... on AuditRecordConnection {
        edges {
          node {
            id
            at
            actorKind
            actorId
            action
            target
            outcome
            detail
          }
        }
        pageInfo {
          hasNextPage
          endCursor
        }
      }
      ... on Error {
        message
      }
    }
  }
`);
