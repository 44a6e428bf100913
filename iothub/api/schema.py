"""How the API's authentication schemes read in the OpenAPI schema.

drf-spectacular describes DRF's `TokenAuthentication` generically; this says what the token is and
where a user gets one. The device scheme (`Authorization: Bearer <token>`, for ingest) is declared in
`SPECTACULAR_SETTINGS["APPEND_COMPONENTS"]` as `deviceToken`, so that the ingest endpoints' own
authentication extension refers to it by that name.
"""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


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
