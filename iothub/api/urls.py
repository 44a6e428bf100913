"""Routes of the REST API under /api/v1/, the OpenAPI schema and Swagger UI."""

urlpatterns: list = []
