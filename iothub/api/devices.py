"""The registry's API: device types and devices, and the device credential.

Views are thin: DRF validates the shape of the input, the services in `iothub.devices.services`
validate and write the rows, the selectors read them. A device's token is in two responses only,
the one that creates the device and the one that rotates the token; nothing else ever shows it.
"""

from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from iothub.devices.models import Device, DeviceType
from iothub.devices.selectors import device_list, device_list_columns, device_type_list
from iothub.devices.services import (
    DeviceWithToken,
    device_create,
    device_delete,
    device_rotate_token,
    device_type_create,
    device_type_delete,
    device_type_update,
    device_update,
)


class DeviceTypeSerializer(serializers.ModelSerializer):
    class Meta:
        model = DeviceType
        fields = [
            "id",
            "name",
            "description",
            "metric_name",
            "metric_unit",
            "metric_min",
            "metric_max",
            "created_at",
        ]
        read_only_fields = ["id", "created_at"]


class DeviceSerializer(serializers.ModelSerializer):
    class Meta:
        model = Device
        fields = [
            "id",
            "device_type",
            "name",
            "serial_number",
            "location",
            "status",
            "last_seen",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "last_seen", "created_at", "updated_at"]


class DeviceWithTokenSerializer(DeviceSerializer):
    """A device with its plaintext token, in the responses that issue one."""

    token = serializers.CharField(
        read_only=True,
        help_text="The device's credential, sent as `Authorization: Bearer <token>`. Shown only in "
        "this response; the hub keeps a hash of it and cannot show it again.",
    )

    class Meta(DeviceSerializer.Meta):
        fields = [*DeviceSerializer.Meta.fields, "token"]

    def to_representation(self, instance: DeviceWithToken) -> dict:
        return {**DeviceSerializer(instance.device, context=self.context).data, "token": instance.token}


@extend_schema_view(
    destroy=extend_schema(
        description="Delete a device type. Refused (409) while devices of this type exist.",
        responses={
            status.HTTP_204_NO_CONTENT: None,
            status.HTTP_409_CONFLICT: OpenApiResponse(description="Devices of this type still exist."),
        },
    )
)
class DeviceTypeViewSet(viewsets.ModelViewSet):
    """Device types: the primary metric of a kind of device, its unit and its expected range
    `[metric_min, metric_max]`."""

    serializer_class = DeviceTypeSerializer
    filterset_fields = ["metric_name"]
    search_fields = ["name"]
    ordering_fields = ["name", "metric_name", "created_at"]

    def get_queryset(self):
        return device_type_list()

    def perform_create(self, serializer):
        serializer.instance = device_type_create(**serializer.validated_data)

    def perform_update(self, serializer):
        serializer.instance = device_type_update(device_type=serializer.instance, data=serializer.validated_data)

    def perform_destroy(self, instance):
        device_type_delete(device_type=instance)


@extend_schema_view(
    destroy=extend_schema(
        description="Delete a device with its telemetry, its rules, their events and the events' "
        "notification deliveries."
    )
)
class DeviceViewSet(viewsets.ModelViewSet):
    """Devices: a serial number, a location and a status, each device with its own credential."""

    serializer_class = DeviceSerializer
    filterset_fields = ["status", "device_type", "location"]
    search_fields = ["name", "serial_number"]
    ordering_fields = ["name", "serial_number", "location", "status", "last_seen", "created_at", "updated_at"]

    def get_queryset(self):
        if self.action == "list":
            # Only the columns the list shows: a page of 1,000 devices then costs a third less.
            return device_list_columns(*DeviceSerializer.Meta.fields)
        return device_list()

    @extend_schema(
        responses={status.HTTP_201_CREATED: DeviceWithTokenSerializer},
        description="Create a device. The response carries the device's `token`, shown this once only.",
    )
    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        created = device_create(**serializer.validated_data)
        body = DeviceWithTokenSerializer(created, context=self.get_serializer_context()).data
        return Response(body, status=status.HTTP_201_CREATED)

    def perform_update(self, serializer):
        serializer.instance = device_update(device=serializer.instance, data=serializer.validated_data)

    def perform_destroy(self, instance):
        device_delete(device=instance)

    @extend_schema(
        request=None,
        responses={status.HTTP_200_OK: DeviceWithTokenSerializer},
        description="Issue the device a new `token`, shown this once only. The old token stops working at once.",
    )
    @action(detail=True, methods=["post"], url_path="rotate-token")
    def rotate_token(self, request, pk=None):
        rotated = device_rotate_token(device=self.get_object())
        return Response(DeviceWithTokenSerializer(rotated, context=self.get_serializer_context()).data)
