"""The machine-command outbox in the Django admin, read-only: what the worker did and why."""

from django.contrib import admin

from iothub.machines.models import MachineCommand


@admin.register(MachineCommand)
class MachineCommandAdmin(admin.ModelAdmin):
    list_display = ["id", "machine_id", "command", "status", "attempt_count", "next_attempt_at", "event"]
    list_filter = ["status", "command"]
    search_fields = ["machine_id", "last_error"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
