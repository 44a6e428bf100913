"""Routes of the REST API under /api/v1/, the OpenAPI schema and Swagger UI.

Each resource module registers its viewsets on the one router here.
"""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from iothub.api.devices import DeviceTypeViewSet, DeviceViewSet
from iothub.api.events import EventViewSet
from iothub.api.health import HealthView
from iothub.api.ingest import TelemetryIngestView
from iothub.api.notifications import NotificationDeliveryViewSet, NotificationTemplateViewSet
from iothub.api.rules import RuleViewSet
from iothub.api.telemetry import (
    TelemetryAggregateView,
    TelemetryExportView,
    TelemetryLatestView,
    TelemetryListView,
)

router = DefaultRouter()
router.register("device-types", DeviceTypeViewSet, basename="device-type")
router.register("devices", DeviceViewSet, basename="device")
router.register("notification-templates", NotificationTemplateViewSet, basename="notification-template")
router.register("notification-deliveries", NotificationDeliveryViewSet, basename="notification-delivery")
router.register("rules", RuleViewSet, basename="rule")
router.register("events", EventViewSet, basename="event")

urlpatterns = [
    path("api/v1/telemetry/", TelemetryIngestView.as_view(), name="telemetry-ingest"),
    path("api/v1/devices/<uuid:device_id>/telemetry/", TelemetryListView.as_view(), name="telemetry-list"),
    path("api/v1/devices/<uuid:device_id>/telemetry/latest/", TelemetryLatestView.as_view(), name="telemetry-latest"),
    path(
        "api/v1/devices/<uuid:device_id>/telemetry/aggregate/",
        TelemetryAggregateView.as_view(),
        name="telemetry-aggregate",
    ),
    path("api/v1/devices/<uuid:device_id>/telemetry/export/", TelemetryExportView.as_view(), name="telemetry-export"),
    path("api/v1/health/", HealthView.as_view(), name="health"),
    path("api/v1/", include(router.urls)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
]
