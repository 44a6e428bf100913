"""Routes of the REST API under /api/v1/, the OpenAPI schema and Swagger UI.

Each resource module registers its viewsets on the one router here.
"""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from iothub.api.devices import DeviceTypeViewSet, DeviceViewSet
from iothub.api.health import HealthView

router = DefaultRouter()
router.register("device-types", DeviceTypeViewSet, basename="device-type")
router.register("devices", DeviceViewSet, basename="device")

urlpatterns = [
    path("api/v1/health/", HealthView.as_view(), name="health"),
    path("api/v1/", include(router.urls)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
]
