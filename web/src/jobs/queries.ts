/** The Jobs pages' GraphQL operations, typed by codegen from the committed SDL. */
import { graphql } from "../gql";

export const JobsQuery = graphql(`
  query PortalJobs($tenantId: ID!, $first: Int!) {
    jobs(tenantId: $tenantId, first: $first, newestFirst: true) {
      __typename
      ... on JobConnection {
        edges {
          node {
            id
            agentId
            kind
            state
            progress
            resultCode
            createdAt
            updatedAt
          }
        }
      }
      ... on Error {
        message
      }
    }
    agents(tenantId: $tenantId, first: 500, includeRevoked: true) {
      __typename
      ... on AgentConnection {
        edges {
          node {
            id
            name
          }
        }
      }
      ... on Error {
        message
      }
    }
  }
`);

export const JobQuery = graphql(`
  query PortalJob($id: ID!) {
    job(id: $id) {
      __typename
      ... on Job {
        id
        agentId
        commandId
        kind
        state
        progress
        resultCode
        createdAt
        updatedAt
        events(first: 500) {
          edges {
            node {
              kind
              at
              progress
              code
              counts
              detail
            }
          }
        }
      }
      ... on Error {
        message
      }
    }
  }
`);

export const CommandQuery = graphql(`
  query PortalCommand($id: ID!) {
    command(id: $id) {
      __typename
      ... on Command {
        id
        name
        args
        state
        issuedAt
        expiresAt
        sentAt
        ackedAt
        finishedAt
      }
      ... on Error {
        message
      }
    }
  }
`);
