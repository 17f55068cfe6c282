/** The Policies pages' GraphQL operations, typed by codegen from the committed SDL. */
import { graphql } from "../gql";

export const PoliciesQuery = graphql(`
  query PortalPolicies($tenantId: ID!) {
    policies(tenantId: $tenantId, first: 200) {
      __typename
      ... on PolicyConnection {
        edges {
          node {
            id
            name
            kind
            currentVersion
            createdAt
          }
        }
      }
      ... on Error {
        message
      }
    }
  }
`);

export const PolicyQuery = graphql(`
  query PortalPolicy($id: ID!) {
    policy(id: $id) {
      __typename
      ... on Policy {
        id
        name
        kind
        currentVersion
        createdAt
      }
      ... on Error {
        message
      }
    }
    policyVersions(policyId: $id, first: 500) {
      __typename
      ... on PolicyVersionConnection {
        edges {
          node {
            version
            document
            createdAt
          }
        }
      }
      ... on Error {
        message
      }
    }
    policyAssignments(policyId: $id, first: 500) {
      __typename
      ... on PolicyAssignmentConnection {
        edges {
          node {
            id
            targetKind
            targetId
          }
        }
      }
      ... on Error {
        message
      }
    }
  }
`);

export const TargetsQuery = graphql(`
  query PortalPolicyTargets($tenantId: ID!) {
    sites(tenantId: $tenantId, first: 200) {
      __typename
      ... on SiteConnection {
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
    agents(tenantId: $tenantId, first: 500) {
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

export const CreatePolicyMutation = graphql(`
  mutation PortalCreatePolicy($tenantId: ID!, $name: String!, $kind: String!) {
    createPolicy(tenantId: $tenantId, name: $name, kind: $kind, document: {}) {
      __typename
      ... on Policy {
        id
      }
      ... on Error {
        message
      }
    }
  }
`);

export const NewPolicyVersionMutation = graphql(`
  mutation PortalNewPolicyVersion($policyId: ID!, $document: JSON!) {
    newPolicyVersion(policyId: $policyId, document: $document) {
      __typename
      ... on PolicyVersion {
        version
      }
      ... on InvalidInput {
        message
        problems {
          path
          message
        }
      }
      ... on Error {
        message
      }
    }
  }
`);

export const AssignPolicyMutation = graphql(`
  mutation PortalAssignPolicy($policyId: ID!, $targetKind: PolicyTarget!, $targetId: ID!) {
    assignPolicy(policyId: $policyId, targetKind: $targetKind, targetId: $targetId) {
      __typename
      ... on PolicyAssignment {
        id
      }
      ... on Error {
        message
      }
    }
  }
`);

export const UnassignPolicyMutation = graphql(`
  mutation PortalUnassignPolicy($policyId: ID!, $targetKind: PolicyTarget!, $targetId: ID!) {
    unassignPolicy(policyId: $policyId, targetKind: $targetKind, targetId: $targetId) {
      __typename
      ... on PolicyAssignment {
        id
      }
      ... on Error {
        message
      }
    }
  }
`);
