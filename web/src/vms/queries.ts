/** The VMs page's GraphQL operations, typed by codegen from the committed SDL. */
import { graphql } from "../gql";

export const VmsQuery = graphql(`
  query PortalVms(
    $tenantId: ID!
    $first: Int!
    $after: String
    $powerState: String
    $host: String
    $owner: String
    $idleState: IdleState
  ) {
    vms(
      tenantId: $tenantId
      first: $first
      after: $after
      powerState: $powerState
      host: $host
      owner: $owner
      idleState: $idleState
    ) {
      __typename
      ... on VmConnection {
        edges {
          node {
            id
            name
            lifeState
            lifeReason
            archive {
              archivedAt
              sizeBefore
              storedBytes
            }
            sightings {
              id
              agentId
              endpoint
              powerState
              host
              owner
              idleState
              seenAt
            }
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

export const PowerVmMutation = graphql(`
  mutation PortalPowerVm($sightingId: ID!, $action: PowerAction!) {
    powerVm(sightingId: $sightingId, action: $action) {
      __typename
      ... on Command {
        id
        state
      }
      ... on Error {
        message
      }
    }
  }
`);

export const ArchiveVmMutation = graphql(`
  mutation PortalArchiveVm($vmId: ID!) {
    archiveVm(vmId: $vmId) {
      __typename
      ... on Command {
        id
        state
      }
      ... on Error {
        message
      }
    }
  }
`);

export const RestoreVmMutation = graphql(`
  mutation PortalRestoreVm($vmId: ID!) {
    restoreVm(vmId: $vmId) {
      __typename
      ... on Command {
        id
        state
      }
      ... on Error {
        message
      }
    }
  }
`);

export const VmQuery = graphql(`
  query PortalVm($id: ID!) {
    vm(id: $id) {
      __typename
      ... on Vm {
        id
        name
        conflict
        lifeState
        lifeReason
        archive {
          archivedAt
          sizeBefore
          storedBytes
        }
        sightings {
          id
          endpoint
          nativeId
          powerState
          host
          owner
          seenAt
        }
        idleness {
          state
          at
          windowStart
          windowEnd
          reasons
          thresholds {
            signal
            value
          }
          days {
            day
            figures {
              signal
              value
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
