/** The Agents page's GraphQL operations, typed by codegen from the committed SDL. */
import { graphql } from "../gql";

export const AgentsQuery = graphql(`
  query PortalAgents($tenantId: ID!) {
    agents(tenantId: $tenantId, first: 200, includeRevoked: true) {
      __typename
      ... on AgentConnection {
        edges {
          node {
            id
            name
            maxFlow
            enrolledAt
            lastSeenAt
            revokedAt
            site {
              id
              name
            }
            modules {
              name
              version
              standaloneFeatures
            }
          }
        }
        pageInfo {
          hasNextPage
        }
      }
      ... on Error {
        message
      }
    }
  }
`);

export const SitesQuery = graphql(`
  query PortalSites($tenantId: ID!) {
    sites(tenantId: $tenantId, first: 100) {
      __typename
      ... on SiteConnection {
        edges {
          node {
            id
            name
            maxFlow
          }
        }
      }
      ... on Error {
        message
      }
    }
  }
`);

export const CreateSiteMutation = graphql(`
  mutation PortalCreateSite($tenantId: ID!, $name: String!) {
    createSite(tenantId: $tenantId, name: $name) {
      __typename
      ... on Site {
        id
        name
      }
      ... on Error {
        message
      }
    }
  }
`);

export const CreateEnrolmentTokenMutation = graphql(`
  mutation PortalCreateEnrolmentToken(
    $siteId: ID!
    $maxFlow: FlowMode!
    $ttlMinutes: Int!
    $note: String!
  ) {
    createEnrolmentToken(siteId: $siteId, maxFlow: $maxFlow, ttlMinutes: $ttlMinutes, note: $note) {
      __typename
      ... on EnrolmentTokenCreated {
        secret
        token {
          id
          expiresAt
          maxFlow
        }
      }
      ... on Error {
        message
      }
    }
  }
`);

export const RevokeAgentMutation = graphql(`
  mutation PortalRevokeAgent($id: ID!) {
    revokeAgent(id: $id) {
      __typename
      ... on Agent {
        id
        revokedAt
      }
      ... on Error {
        message
      }
    }
  }
`);
