"""How the API reads in the OpenAPI schema: its authentication schemes, and its refusals.

drf-spectacular describes DRF's `TokenAuthentication` generically; this says what the token is and
where a user gets one. The device scheme (`Authorization: Bearer <token>`, for ingest) is declared in
`SPECTACULAR_SETTINGS["APPEND_COMPONENTS"]` as `deviceToken`, so that the ingest endpoints' own
authentication extension refers to it by that name.
"""

from drf_spectacular import openapi
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import ResolvedComponent
from rest_framework.authentication import TokenAuthentication


class UserTokenScheme(OpenApiAuthenticationExtension):
    target_class = "rest_framework.authentication.TokenAuthentication"
    name = "tokenAuth"
    match_subclasses = True

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "A user's API token: `Authorization: Token <key>`. An administrator creates "
            "one with `python manage.py drf_create_token <username>`. What the user may do follows "
            "the user's role: `viewer` reads, `operator` reads and writes.",
        }


# One error shape for every refusal of the user API (docs/api.md, "Errors").
ERROR_SCHEMA = {
    "type": "object",
    "description": "A refusal. `detail` says what went wrong; a 400 for invalid input instead (or as well) "
    "names each field with its messages: a body field, a query parameter, or `non_field_errors` for the "
    "body as a whole.",
    "properties": {"detail": {"type": "string"}},
    "additionalProperties": {"type": "array", "items": {"type": "string"}},
}
_WRITES = {"create", "update", "partial_update", "destroy"}


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's AutoSchema, plus the refusals each operation of the user API can answer,
    so that the schema tells clients (and the schemathesis run in the tests) the whole truth:

    - 400 where there is input (a body or query parameters), 415 where there is a body (JSON only);
    - 401 and 403 everywhere (no credentials; no role, or `viewer` asking for a change);
    - 404 where the path names a row, and on paginated lists (a page past the last);
    - 409 on every create, update and delete (a unique value taken, a row still referred to).

    Operations that declare an answer keep their own description; every 4xx gets the one error
    shape. Endpoints with authentication of their own (ingest: devices; health: none) are left as
    they declare themselves.
    """

    def get_operation(self, *args, **kwargs):
        operation = super().get_operation(*args, **kwargs)
        if operation is None or not self._serves_users():
            return operation
        error = ResolvedComponent(name="Error", type=ResolvedComponent.SCHEMA, schema=ERROR_SCHEMA, object="Error")
        self.registry.register_on_missing(error)
        responses = operation["responses"]
        for status, description in self._refusals(operation):
            responses.setdefault(status, {"description": description})
        for status, response in responses.items():
            if status.startswith("4") and "content" not in response:
                response["content"] = {"application/json": {"schema": error.ref}}
        return operation

    def _serves_users(self) -> bool:
        return any(isinstance(a, TokenAuthentication) for a in self.view.get_authenticators())

    def _refusals(self, operation: dict) -> list[tuple[str, str]]:
        has_body = "requestBody" in operation
        in_path = any(p["in"] == "path" for p in operation.get("parameters", []))
        in_query = any(p["in"] == "query" for p in operation.get("parameters", []))
        refusals = []
        if has_body or in_query:
            refusals.append(("400", "Invalid input; the body names each field (or query parameter) refused."))
        refusals.append(("401", "No credentials, or unknown ones."))
        refusals.append(("403", "The user's role does not allow this (no role; `viewer` asking for a change)."))
        if in_path:
            refusals.append(("404", "No such row (or it was deleted while the request was handled)."))
        elif self._is_list_view() and self._get_paginator() is not None:
            refusals.append(("404", "No such page."))
        if getattr(self.view, "action", None) in _WRITES:
            refusals.append(("409", "Conflicts with other rows: a unique value taken, or a row still referred to."))
        if has_body:
            refusals.append(("415", "The body is not JSON."))
        return refusals
