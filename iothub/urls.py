"""Routes of the hub: the REST API, its schema and docs, the admin, metrics, the dashboard."""

from django.contrib import admin
from django.urls import include, path

from iothub.monitoring.views import metrics

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("iothub.api.urls")),
    path("metrics", metrics, name="metrics"),
    path("", include("iothub.dashboard.urls")),
]

# Under /api/ these answer JSON in the API's error shape; elsewhere, Django's pages.
handler404 = "iothub.api.errors.page_not_found"
handler500 = "iothub.api.errors.server_error"
