"""The chart library comes from the installed `plotly` package and is served by WhiteNoise."""

from django.contrib.staticfiles import finders
from django.test import Client

from iothub.dashboard.finders import STATIC_PATH, PlotlyJsFinder


def test_plotly_js_is_served_from_the_installed_package():
    response = Client().get(f"/static/{STATIC_PATH}")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/javascript")
    body = b"".join(response.streaming_content)
    assert b"plotly.js v" in body[:1000] and len(body) > 1_000_000


def test_only_plotly_js_is_taken_from_the_package():
    listed = [path for path, _ in PlotlyJsFinder().list(None)]

    assert listed == ["plotly.min.js"]
    assert finders.find(STATIC_PATH).endswith("plotly/package_data/plotly.min.js")
    assert PlotlyJsFinder().find("vendor/plotly/datasets/iris.csv.gz") == []


def test_the_dashboards_own_assets_are_served():
    for path in ("dashboard/dashboard.css", "dashboard/dashboard.js", "dashboard/device-chart.js"):
        assert Client().get(f"/static/{path}").status_code == 200, path
