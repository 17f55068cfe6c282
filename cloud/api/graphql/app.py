"""The ASGI GraphQL endpoint: resolves the principal from the bearer token at the edge."""

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL

from dockyard.cloud.domain import admin
from dockyard.cloud.domain.principal import Principal
from dockyard.cloud.services import Services

from .context import Context
from .schema import build_schema


def resolve_principal(svc: Services, authorization: str) -> Principal | None:
    scheme, _, secret = authorization.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        return None
    with svc.db.reader() as session:
        return admin.principal_for_api_token(session, secret.strip())


class DockyardGraphQL(GraphQL[Context, None]):
    def __init__(self, svc: Services) -> None:
        super().__init__(build_schema(), graphql_ide="graphiql", allow_queries_via_get=False)
        self.svc = svc

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        header = request.headers.get("authorization", "")
        principal = await self.svc.run_db(resolve_principal, self.svc, header) if header else None
        return Context(self.svc, principal)


def graphql_app(svc: Services) -> Any:
    return DockyardGraphQL(svc)
