"""Device types and devices in the Django admin.

The device credential is never shown here (the hub has only its hash); a device added here has no
token until one is issued through the API (`POST /api/v1/devices/{id}/rotate-token/`). A serial
number changed or a device deleted here reaches the MQTT broker's password file at once, as through
the API (iothub/devices/broker.py).
"""

from django.contrib import admin

from iothub.devices.broker import broker_credentials_changed
from iothub.devices.models import Device, DeviceType


@admin.register(DeviceType)
class DeviceTypeAdmin(admin.ModelAdmin):
    list_display = ["name", "metric_name", "metric_unit", "metric_min", "metric_max", "created_at"]
    list_filter = ["metric_name"]
    search_fields = ["name", "description"]
    readonly_fields = ["id", "created_at"]
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


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    list_display = ["name", "serial_number", "device_type", "location", "status", "last_seen"]
    list_filter = ["status", "device_type", "location"]
    list_select_related = ["device_type"]
    search_fields = ["name", "serial_number"]
    date_hierarchy = "created_at"
    readonly_fields = ["id", "last_seen", "created_at", "updated_at"]
    # Listed explicitly so that `token_hash` can never appear in the form.
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

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if "serial_number" in form.changed_data:
            broker_credentials_changed()

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        broker_credentials_changed()

    def delete_queryset(self, request, queryset):
        super().delete_queryset(request, queryset)
        broker_credentials_changed()
