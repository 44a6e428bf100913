"""The OpenAPI schema, the committed `docs/api.yaml`, and Swagger UI served without a CDN."""

import io
import re
from pathlib import Path

import pytest
import yaml
from django.core.management import call_command

API_YAML = Path(__file__).resolve().parents[2] / "docs" / "api.yaml"
REGENERATE = "python manage.py spectacular --file docs/api.yaml --validate --fail-on-warn"


def _generated_schema() -> dict:
    out = io.StringIO()
    # --fail-on-warn: a schema drf-spectacular had to guess at is a bug, not a schema.
    call_command("spectacular", "--validate", "--fail-on-warn", stdout=out)
    return yaml.safe_load(out.getvalue())


def test_committed_api_yaml_is_what_the_code_generates():
    assert yaml.safe_load(API_YAML.read_text()) == _generated_schema(), (
        f"docs/api.yaml is stale; regenerate it with: {REGENERATE}"
    )


def test_schema_documents_the_user_and_device_token_schemes():
    schemes = _generated_schema()["components"]["securitySchemes"]

    assert schemes["tokenAuth"]["in"] == "header" and schemes["tokenAuth"]["name"] == "Authorization"
    assert "Token <key>" in schemes["tokenAuth"]["description"]
    assert (schemes["deviceToken"]["type"], schemes["deviceToken"]["scheme"]) == ("http", "bearer")


def test_schema_shows_the_token_only_where_it_is_issued():
    schema = _generated_schema()
    paths = schema["paths"]

    def response_schema(path, method, code):
        return paths[path][method]["responses"][code]["content"]["application/json"]["schema"]["$ref"]

    assert response_schema("/api/v1/devices/", "post", "201").endswith("/DeviceWithToken")
    assert response_schema("/api/v1/devices/{id}/rotate-token/", "post", "200").endswith("/DeviceWithToken")
    assert response_schema("/api/v1/devices/{id}/", "get", "200").endswith("/Device")
    assert "token" not in schema["components"]["schemas"]["Device"]["properties"]


def test_schema_is_served_to_anonymous(anonymous_client, db):
    response = anonymous_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")

    assert response.status_code == 200
    assert "/api/v1/devices/" in response.json()["paths"]


@pytest.mark.parametrize("path", ["/api/schema/", "/api/docs/"])
@pytest.mark.parametrize("credential", ["Token not-a-token", "Bearer not-a-device-token", "Basic Zm9vOmJhcg=="])
def test_schema_and_docs_answer_whatever_credential_is_sent(anonymous_client, db, path, credential):
    response = anonymous_client.get(path, HTTP_AUTHORIZATION=credential)

    assert response.status_code == 200


def test_every_refusal_of_the_user_api_is_documented_in_the_one_error_shape():
    schema = _generated_schema()
    assert schema["components"]["schemas"]["Error"]["properties"]["detail"] == {"type": "string"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if path in ("/api/v1/telemetry/", "/api/v1/health/"):
                continue  # devices' and probes' own authentication, each described by its view
            responses = operation["responses"]
            assert {"401", "403"} <= set(responses), (method, path)
            if "{" in path:
                assert "404" in responses, (method, path)
            if "requestBody" in operation:
                assert {"400", "415"} <= set(responses), (method, path)
                assert list(operation["requestBody"]["content"]) == ["application/json"], (method, path)
            for status, response in responses.items():
                if status.startswith("4") and "DeliveryRetryConflict" not in str(response):
                    assert response["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/Error"
                    }, (method, path, status)


@pytest.mark.parametrize("tag", ["script", "link"])
def test_swagger_ui_assets_are_served_by_the_hub_not_a_cdn(anonymous_client, db, tag):
    page = anonymous_client.get("/api/docs/")
    assert page.status_code == 200
    attribute = "src" if tag == "script" else "href"
    urls = re.findall(rf'<{tag}[^>]*\s{attribute}="([^"]+)"', page.content.decode())

    assert urls, f"no <{tag} {attribute}=...> on the Swagger UI page"
    for url in urls:
        assert url.startswith("/static/"), f"{url} is not served by the hub"
        asset = anonymous_client.get(url)
        assert asset.status_code == 200, url
        assert b"".join(asset.streaming_content), url
