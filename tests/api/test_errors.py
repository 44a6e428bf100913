"""The API's one error shape: an object, `detail` or messages keyed by field, whatever answers."""

import pytest

pytestmark = pytest.mark.django_db


def test_a_nul_character_in_search_is_a_400_naming_the_parameter(viewer_client):
    response = viewer_client.get("/api/v1/devices/", {"search": "\x00"})

    assert response.status_code == 400
    assert list(response.json()) == ["search"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/devices/not-a-uuid/telemetry/",
        "/api/v1/devices/not-a-uuid/telemetry/aggregate/",
        "/api/v1/no-such-resource/",
    ],
)
def test_a_path_no_route_matches_is_a_json_404_under_api(viewer_client, path):
    response = viewer_client.get(path)

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found."}


def test_a_path_no_route_matches_elsewhere_is_the_html_page(viewer_client):
    response = viewer_client.get("/no-such-page/")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")
