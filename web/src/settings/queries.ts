/** The Settings page's GraphQL operations, typed by codegen from the committed SDL. */
import { graphql } from "../gql";

export const TenantQuery = graphql(`
  query PortalTenant($id: ID!) {
    tenant(id: $id) {
      __typename
      ... on Tenant {
        id
        name
        kind
        flowMode
        plan
      }
      ... on Error {
        message
      }
    }
  }
`);

export const SetFlowModeMutation = graphql(`
  mutation PortalSetFlowMode($tenantId: ID!, $flowMode: FlowMode!) {
    setFlowMode(tenantId: $tenantId, flowMode: $flowMode) {
      __typename
      ... on Tenant {
        id
        flowMode
      }
      ... on Error {
        message
      }
    }
  }
`);

export const MembersQuery = graphql(`
  query PortalMembers($tenantId: ID!) {
    members(tenantId: $tenantId, first: 500) {
      __typename
      ... on MemberConnection {
        edges {
          node {
            userId
            email
            name
            role
            via
            invited
            joinedAt
          }
        }
      }
      ... on Error {
        message
      }
    }
  }
`);

export const InviteMemberMutation = graphql(`
  mutation PortalInviteMember($tenantId: ID!, $email: String!, $role: Role!) {
    inviteMember(tenantId: $tenantId, email: $email, role: $role) {
      __typename
      ... on Member {
        userId
        email
      }
      ... on Error {
        message
      }
    }
  }
`);

export const ChangeMemberRoleMutation = graphql(`
  mutation PortalChangeMemberRole($tenantId: ID!, $userId: ID!, $role: Role!) {
    changeMemberRole(tenantId: $tenantId, userId: $userId, role: $role) {
      __typename
      ... on Member {
        userId
        role
      }
      ... on Error {
        message
      }
    }
  }
`);

export const RemoveMemberMutation = graphql(`
  mutation PortalRemoveMember($tenantId: ID!, $userId: ID!) {
    removeMember(tenantId: $tenantId, userId: $userId) {
      __typename
      ... on Member {
        userId
      }
      ... on Error {
        message
      }
    }
  }
`);

export const ApiTokensQuery = graphql(`
  query PortalApiTokens($tenantId: ID!) {
    apiTokens(tenantId: $tenantId, first: 500, includeRevoked: true) {
      __typename
      ... on ApiTokenConnection {
        edges {
          node {
            id
            name
            createdAt
            expiresAt
            lastUsedAt
            revokedAt
          }
        }
      }
      ... on Error {
        message
      }
    }
  }
`);

export const CreateApiTokenMutation = graphql(`
  mutation PortalCreateApiToken($tenantId: ID!, $name: String!, $expiresInDays: Int!) {
    createApiToken(tenantId: $tenantId, name: $name, expiresInDays: $expiresInDays) {
      __typename
      ... on NewApiToken {
        secret
        token {
          id
          name
          expiresAt
        }
      }
      ... on Error {
        message
      }
    }
  }
`);

export const RevokeApiTokenMutation = graphql(`
  mutation PortalRevokeApiToken($id: ID!) {
    revokeApiToken(id: $id) {
      __typename
      ... on ApiToken {
        id
        revokedAt
      }
      ... on Error {
        message
      }
    }
  }
`);
