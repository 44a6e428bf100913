"""Routes of the hub: the REST API, its schema and docs, the admin, the dashboard."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("iothub.api.urls")),
    path("", include("iothub.dashboard.urls")),
]
