"""The route table of the agent protocol, from which both the router and the OpenAPI
document are made: the document is generated from the protocol's models, never written."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from dockyard.agent import protocol as p
from dockyard.agent.protocol import vocabulary


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    op_id: str
    summary: str
    body: type[BaseModel] | None = None
    form: bool = False
    ok: tuple[int, type[BaseModel]] = (200, p.Problem)
    errors: tuple[int, ...] = (400, 401, 413, 422)
    auth: bool = True
    query: tuple[tuple[str, dict[str, Any], bool], ...] = ()
    path_params: tuple[str, ...] = field(default=())


OPERATIONS = (
    Operation(
        "POST",
        "/enroll",
        "enroll",
        "Enrol with a one-time token and a new public key",
        body=p.EnrollRequest,
        ok=(201, p.EnrollResponse),
        auth=False,
    ),
    Operation(
        "POST",
        "/token",
        "token",
        "Client-credentials grant with a private_key_jwt assertion (RFC 7523)",
        form=True,
        ok=(200, p.TokenResponse),
        errors=(400, 401, 413),
        auth=False,
    ),
    Operation(
        "GET",
        "/poll",
        "poll",
        "Long-poll the agent's sequence",
        ok=(200, p.PollResponse),
        errors=(400, 401, 503),
        query=(
            ("after", {"type": "integer", "minimum": 0}, True),
            ("wait", {"type": "number", "minimum": 0, "maximum": p.MAX_POLL_WAIT_S}, False),
        ),
    ),
    Operation(
        "POST",
        "/acks",
        "ack",
        "Acknowledge entries of the sequence",
        body=p.AckRequest,
        ok=(200, p.AckResponse),
        errors=(400, 401, 403, 404, 413, 422),
    ),
    Operation(
        "POST",
        "/jobs/{job_id}/events",
        "job_events",
        "Report a job's progress and result",
        body=p.JobEventsRequest,
        ok=(200, p.JobEventsResponse),
        errors=(400, 401, 403, 404, 413, 422),
        path_params=("job_id",),
    ),
    Operation(
        "POST",
        "/metadata",
        "metadata",
        "Send an inventory or catalog batch",
        body=p.MetadataBatch,
        ok=(200, p.MetadataResponse),
        errors=(400, 401, 403, 413, 422),
    ),
    Operation(
        "POST",
        "/storage/sign",
        "storage_sign",
        "Presigned URLs for objects of cloud-managed storage (flow mode data only)",
        body=p.SignRequest,
        ok=(200, p.SignResponse),
        errors=(400, 401, 403, 413, 422),
    ),
    Operation(
        "POST",
        "/storage/list",
        "storage_list",
        "List objects of cloud-managed storage (flow mode data only)",
        body=p.ListRequest,
        ok=(200, p.ListResponse),
        errors=(400, 401, 403, 413, 422),
    ),
    Operation(
        "POST",
        "/key",
        "rotate_key",
        "Replace the agent's public key",
        body=p.RotateKeyRequest,
        ok=(200, p.EnrollResponse),
        errors=(400, 401, 409, 413, 422),
    ),
)


def openapi(server_url: str) -> dict[str, Any]:
    models: list[type[BaseModel]] = [p.Problem, p.OAuthError]
    for op in OPERATIONS:
        for m in (op.body, op.ok[1]):
            if m is not None and m not in models:
                models.append(m)
    keyed, schemas = models_json_schema(
        [(m, "validation") for m in models],
        ref_template="#/components/schemas/{model}",
    )
    refs = {m: keyed[(m, "validation")]["$ref"] for m in models}
    version_header = {
        "name": p.VERSION_HEADER,
        "in": "header",
        "required": True,
        "schema": {"type": "string", "enum": [p.PROTOCOL_VERSION]},
    }
    paths: dict[str, Any] = {}
    for op in OPERATIONS:
        params: list[dict[str, Any]] = [version_header]
        params += [{"name": n, "in": "query", "required": r, "schema": s} for n, s, r in op.query]
        params += [
            {
                "name": n,
                "in": "path",
                "required": True,
                "schema": {"type": "string", "format": "uuid"},
            }
            for n in op.path_params
        ]
        error_model = p.OAuthError if op.form else p.Problem
        responses: dict[str, Any] = {
            str(op.ok[0]): {
                "description": "OK",
                "content": {"application/json": {"schema": {"$ref": refs[op.ok[1]]}}},
            }
        }
        for code in op.errors:
            responses[str(code)] = {
                "description": "Error",
                "content": {"application/json": {"schema": {"$ref": refs[error_model]}}},
            }
        operation: dict[str, Any] = {
            "operationId": op.op_id,
            "summary": op.summary,
            "parameters": params,
            "responses": responses,
        }
        if op.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": refs[op.body]}}},
            }
        if op.form:
            operation["requestBody"] = {
                "required": True,
                "content": {
                    "application/x-www-form-urlencoded": {
                        "schema": {
                            "type": "object",
                            "required": ["grant_type", "client_assertion_type", "client_assertion"],
                            "properties": {
                                "grant_type": {"type": "string", "enum": ["client_credentials"]},
                                "client_assertion_type": {
                                    "type": "string",
                                    "enum": [p.ASSERTION_TYPE],
                                },
                                "client_assertion": {"type": "string"},
                                "client_id": {"type": "string"},
                            },
                        }
                    }
                },
            }
        if op.auth:
            operation["security"] = [{"agentToken": []}]
        paths.setdefault(op.path, {})[op.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Dockyard agent protocol", "version": p.PROTOCOL_VERSION},
        "servers": [{"url": server_url + p.BASE_PATH}],
        "paths": paths,
        "components": {
            "schemas": schemas.get("$defs", {}) | vocabulary.openapi_schemas(),
            "securitySchemes": {"agentToken": {"type": "http", "scheme": "bearer"}},
        },
    }
