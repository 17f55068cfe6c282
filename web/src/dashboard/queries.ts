/** The Dashboard page's GraphQL operation, typed by codegen from the committed SDL. */
import { graphql } from "../gql";

export const DashboardQuery = graphql(`
  query PortalDashboard($tenantId: ID!, $days: Int!) {
    dashboard(tenantId: $tenantId) {
      __typename
      ... on Dashboard {
        agents {
          online
          quiet
          revoked
        }
        jobs {
          pending
          running
          succeededLast24h
          failedLast24h
        }
        vms {
          byState {
            state
            count
          }
          storedBytes
          savedBytes
          vcpusReclaimed
          memoryMbReclaimed
          diskBytesReclaimed
          powerReclaimedWatts
          energyReclaimedKwh
        }
        jobsByDay(days: $days) {
          day
          succeeded
          failed
        }
        history(days: $days) {
          days
          series {
            name
            values
          }
        }
      }
      ... on Error {
        message
      }
    }
  }
`);
