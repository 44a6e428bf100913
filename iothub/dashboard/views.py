"""The dashboard's pages. Thin: parse the request, call a selector or a service, render.

Every page needs a login and a role (`viewer` or `operator`, or a superuser); acting on an event,
and creating, editing, enabling or disabling rules and notification templates, needs `operator`.
The buttons and forms are hidden from viewers (or shown read-only), and the server refuses their
POSTs anyway.
"""

from copy import copy
from functools import wraps
from uuid import UUID

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import BadRequest, PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db import IntegrityError, transaction
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from iothub.accounts.roles import user_can_read, user_can_write
from iothub.dashboard import selectors
from iothub.dashboard.forms import BacktestRangeForm, NotificationTemplateForm, RuleForm, TemplatePreviewForm
from iothub.devices.models import Device
from iothub.events.models import Event
from iothub.events.services import EventTransitionRefused, event_acknowledge, event_resolve
from iothub.notifications.models import NotificationTemplate
from iothub.notifications.services import notification_template_create, notification_template_update
from iothub.notifications.templating import PLACEHOLDERS
from iothub.rules.models import Rule
from iothub.rules.services import rule_create, rule_update

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


# ------------------------------------------------------------------------------------------------
# Rules and notification templates: read by every role, written by operators. A form is validated
# by the API's serializer (`forms.py`) and saved by the services the API saves with; a refused form
# answers 400 with the errors beside the fields they name, and nothing is written.
# ------------------------------------------------------------------------------------------------
def _writer_only(request, what: str) -> None:
    if not user_can_write(request.user):
        raise PermissionDenied(f"Viewers cannot {what}: this needs the operator role.")


def _read_only(form) -> None:
    """A viewer sees the form's values, none of them editable."""
    for field in form.fields.values():
        field.disabled = True


def _form_status(request, *forms) -> int:
    return 400 if request.method == "POST" and any(form.errors for form in forms) else 200


def _next_url(request, default: str) -> str:
    target = request.POST.get("next", "")
    if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return target
    return default


RULE_FILTERS = ("device",)


@role_required
def rule_list(request):
    filters = _filters(request, RULE_FILTERS)
    page = _page(request, selectors.rule_rows(device=_uuid_filter(filters, "device")))
    rows = [selectors.rule_row(rule) for rule in page.object_list]
    return render(
        request,
        "dashboard/rules.html",
        _context(request, page=page, rows=rows, filters=filters, choices=selectors.rule_filter_choices()),
    )


@role_required
def rule_new(request):
    _writer_only(request, "create rules")
    form = RuleForm(request.POST or None, initial={"device": request.GET.get("device") or None})
    return _rule_form(request, form, rule=None)


@role_required
def rule_detail(request, rule_id):
    try:
        page = selectors.rule_page_get(rule_id=rule_id)
    except Rule.DoesNotExist:
        raise Http404("no such rule") from None
    if request.method == "POST":
        _writer_only(request, "change rules")
        form = RuleForm(request.POST, instance=page.rule)
    else:
        form = RuleForm(instance=page.rule)
        if not user_can_write(request.user):
            _read_only(form)
    return _rule_form(request, form, rule=page.rule, page=page)


def _form_save(form, save):
    """The service's save, or None with its refusal shown on the form: a validation error naming
    fields, or a conflict the form's checks could not see (another user saved the same unique name
    between this form's check and its save), named as the API names it (409 there)."""
    try:
        with transaction.atomic():
            return save()
    except ValidationError as refused:
        form.add_service_error(refused)
    except IntegrityError as conflict:
        form.add_conflict(conflict)
    return None


def _rule_form(request, form: RuleForm, *, rule: Rule | None, page: selectors.RulePage | None = None):
    backtest_range = BacktestRangeForm(request.POST or None)
    preview = None
    if request.method == "POST" and form.is_valid():
        if "preview" in request.POST:
            draft = copy(rule) if rule else Rule()
            for name, value in form.cleaned_data.items():
                setattr(draft, name, value)
            preview = selectors.rule_draft_backtest(rule=draft, span=backtest_range.span())
        else:
            data = form.cleaned_data
            saved = _form_save(
                form, lambda: rule_create(**data) if rule is None else rule_update(rule=copy(rule), data=data)
            )
            if saved is not None:
                messages.success(request, f"Rule “{saved.name}” saved.")
                return redirect("dashboard:rule", rule_id=saved.id)
    return render(
        request,
        "dashboard/rule.html",
        _context(
            request,
            form=form,
            rule=rule,
            page=page,
            backtest_range=backtest_range,
            preview=preview,
            templates=selectors.template_choices(),
        ),
        status=_form_status(request, form),
    )


def _rule_enable(request, rule_id, enabled: bool):
    try:
        rule = Rule.objects.get(id=rule_id)
    except Rule.DoesNotExist:
        raise Http404("no such rule") from None
    done = "enabled" if enabled else "disabled"
    try:
        rule_update(rule=rule, data={"is_enabled": enabled})
    except ValidationError as refused:
        # The service validates the whole rule on every write: one saved before a template it
        # names was deactivated must have that fixed first, and the page says where.
        problems = "; ".join(f"{name}: {' '.join(found)}" for name, found in refused.message_dict.items())
        messages.error(request, f"Rule “{rule.name}” was not {done}: {problems}")
    else:
        messages.success(request, f"Rule “{rule.name}” {done}.")
    return redirect(_next_url(request, reverse("dashboard:rule", args=[rule.id])))


@operator_required
def rule_enable_view(request, rule_id):
    return _rule_enable(request, rule_id, True)


@operator_required
def rule_disable_view(request, rule_id):
    return _rule_enable(request, rule_id, False)


def _template_activate(request, template_id, active: bool):
    try:
        template = NotificationTemplate.objects.get(id=template_id)
    except NotificationTemplate.DoesNotExist:
        raise Http404("no such notification template") from None
    notification_template_update(template=template, changes={"is_active": active})
    messages.success(request, f"Template “{template.name}” {'activated' if active else 'deactivated'}.")
    return redirect(_next_url(request, reverse("dashboard:template", args=[template.id])))


@operator_required
def template_activate_view(request, template_id):
    return _template_activate(request, template_id, True)


@operator_required
def template_deactivate_view(request, template_id):
    return _template_activate(request, template_id, False)


@role_required
def template_list(request):
    page = _page(request, selectors.template_rows())
    return render(request, "dashboard/templates.html", _context(request, page=page))


@role_required
def template_new(request):
    _writer_only(request, "create notification templates")
    return _template_form(request, NotificationTemplateForm(request.POST or None), template=None)


@role_required
def template_detail(request, template_id):
    try:
        template = NotificationTemplate.objects.get(id=template_id)
    except NotificationTemplate.DoesNotExist:
        raise Http404("no such notification template") from None
    if request.method == "POST":
        _writer_only(request, "change notification templates")
        form = NotificationTemplateForm(request.POST, instance=template)
    else:
        form = NotificationTemplateForm(instance=template)
        if not user_can_write(request.user):
            _read_only(form)
    return _template_form(request, form, template=template)


def _template_form(request, form: NotificationTemplateForm, *, template: NotificationTemplate | None):
    preview_form = TemplatePreviewForm(request.POST or None)
    preview = None
    if request.method != "POST" and template is not None:
        # The saved text, rendered for the sample event, for every role.
        preview = selectors.template_preview(text=template.message_template)
    elif request.method == "POST" and form.is_valid():
        if "preview" in request.POST:
            if preview_form.is_valid():
                try:
                    preview = selectors.template_preview(
                        text=form.cleaned_data["message_template"], event_id=preview_form.cleaned_data["event"]
                    )
                except Event.DoesNotExist:
                    preview_form.add_error("event", f"No event with id {preview_form.cleaned_data['event']}.")
        else:
            data = form.cleaned_data
            saved = _form_save(
                form,
                lambda: (
                    notification_template_create(**data)
                    if template is None
                    else notification_template_update(template=copy(template), changes=data)
                ),
            )
            if saved is not None:
                messages.success(request, f"Template “{saved.name}” saved.")
                return redirect("dashboard:template", template_id=saved.id)
    return render(
        request,
        "dashboard/template.html",
        _context(
            request,
            form=form,
            template=template,
            preview=preview,
            preview_form=preview_form,
            placeholders=PLACEHOLDERS,
        ),
        status=_form_status(request, form, preview_form),
    )
