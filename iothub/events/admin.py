"""Events in the Django admin: read-only (the rules engine writes them; their lifecycle steps go
through the API, which records who and when)."""

from django.contrib import admin

from iothub.events.models import Event


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ["id", "timestamp", "severity", "status", "message", "rule"]
    list_filter = ["status", "severity"]
    list_select_related = ["rule"]
    search_fields = ["message"]
    date_hierarchy = "timestamp"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
