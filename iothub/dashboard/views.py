"""The dashboard's pages. Thin: parse the request, call a selector or a service, render.

Every page needs a login and a role (`viewer` or `operator`, or a superuser); acting on an event
needs `operator`. The buttons are hidden from viewers, and the server refuses them anyway.
"""

from functools import wraps
from uuid import UUID

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import BadRequest, PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from iothub.accounts.roles import user_can_read, user_can_write
from iothub.dashboard import selectors
from iothub.devices.models import Device
from iothub.events.models import Event
from iothub.events.services import EventTransitionRefused, event_acknowledge, event_resolve

PAGE_SIZE = 50


def role_required(view):
    """Logged in (else to the login page) and holding a role (else 403)."""

    @login_required
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if not user_can_read(request.user):
            raise PermissionDenied("Your account has no role on this hub: ask an administrator for viewer or operator.")
        return view(request, *args, **kwargs)

    return wrapped


def operator_required(view):
    """Acting on the hub: a POST by an operator (or a superuser); a viewer gets 403 even with a
    hand-made request, since hiding the button is not enough."""

    @role_required
    @require_POST
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if not user_can_write(request.user):
            raise PermissionDenied("Viewers cannot act on events: this needs the operator role.")
        return view(request, *args, **kwargs)

    return wrapped


def _page(request, queryset):
    return Paginator(queryset, PAGE_SIZE).get_page(request.GET.get("page"))


def _filters(request, names: tuple[str, ...]) -> dict[str, str]:
    return {name: request.GET.get(name, "").strip() for name in names}


def _uuid_filter(filters: dict[str, str], name: str) -> UUID | None:
    """An id from the query string; a malformed one is a 400, not an empty page."""
    if not filters[name]:
        return None
    try:
        return UUID(filters[name])
    except ValueError:
        raise BadRequest(f"{name}: not a valid id") from None


def _context(request, **extra) -> dict:
    can_act = user_can_write(request.user)
    return {
        "can_act": can_act,
        "role": "operator" if can_act else "viewer",
        "refresh_seconds": settings.IOTHUB_DASHBOARD_REFRESH_SECONDS,
        **extra,
    }


@role_required
def overview(request):
    return render(
        request,
        "dashboard/overview.html",
        _context(request, overview=selectors.overview_get(), events=selectors.event_list_recent()),
    )


@role_required
def overview_stats(request):
    """The overview's figures alone, for its refresh."""
    return render(request, "dashboard/partials/overview_stats.html", {"overview": selectors.overview_get()})


@role_required
def overview_events(request):
    """The latest events alone, for the overview's refresh."""
    return render(request, "dashboard/partials/event_feed.html", {"events": selectors.event_list_recent()})


DEVICE_FILTERS = ("q", "status", "device_type", "location")


@role_required
def device_list(request):
    filters = _filters(request, DEVICE_FILTERS)
    queryset = selectors.device_rows(
        search=filters["q"],
        status=filters["status"],
        device_type=_uuid_filter(filters, "device_type"),
        location=filters["location"],
    )
    page = _page(request, queryset)
    rows = [selectors.device_row(device) for device in page.object_list]
    template = "dashboard/partials/device_table.html" if request.GET.get("fragment") else "dashboard/devices.html"
    return render(
        request,
        template,
        _context(request, page=page, rows=rows, filters=filters, choices=selectors.device_filter_choices()),
    )


@role_required
def device_detail(request, device_id):
    try:
        page = selectors.device_page_get(device_id=device_id)
    except Device.DoesNotExist:
        raise Http404("no such device") from None
    return render(
        request,
        "dashboard/device.html",
        _context(request, page=page, device=page.device, chart_config=_chart_config(page)),
    )


def _chart_config(page: selectors.DevicePage) -> dict:
    """What the page's script needs to draw the charts: where to read, and the lines to draw."""
    return {
        "aggregateUrl": reverse("telemetry-aggregate", args=[page.device.id]),
        "charts": [
            {
                "metric": chart.metric,
                "unit": chart.unit,
                "lines": [{"value": line.value, "label": line.label, "kind": line.kind} for line in chart.lines],
            }
            for chart in page.charts
        ],
    }


EVENT_FILTERS = ("status", "severity", "device", "q")


@role_required
def event_list(request):
    filters = _filters(request, EVENT_FILTERS)
    queryset = selectors.event_rows(
        status=filters["status"],
        severity=filters["severity"],
        device=_uuid_filter(filters, "device"),
        search=filters["q"],
    )
    page = _page(request, queryset)
    template = "dashboard/partials/event_table.html" if request.GET.get("fragment") else "dashboard/events.html"
    return render(
        request, template, _context(request, page=page, filters=filters, choices=selectors.event_filter_choices())
    )


@role_required
def event_detail(request, event_id):
    try:
        page = selectors.event_page_get(event_id=event_id)
    except Event.DoesNotExist:
        raise Http404("no such event") from None
    return render(request, "dashboard/event.html", _context(request, page=page, event=page.event))


def _event_step(request, event_id: int, step, done: str):
    try:
        step(event_id=event_id, user=request.user, note=request.POST.get("note"))
    except Event.DoesNotExist:
        raise Http404("no such event") from None
    except (EventTransitionRefused, ValueError) as refused:
        messages.error(request, str(refused))
    else:
        messages.success(request, f"Event {event_id} {done}.")
    return redirect("dashboard:event", event_id=event_id)


@operator_required
def event_acknowledge_view(request, event_id):
    return _event_step(request, event_id, event_acknowledge, "acknowledged")


@operator_required
def event_resolve_view(request, event_id):
    return _event_step(request, event_id, event_resolve, "resolved")
