"""Reads behind the dashboard's pages, composed from the domain models; the views call only these.

Each is bounded: counts read small tables or an index prefix, lists are paginated or capped, and
telemetry is read only by device and time range (the hypertable has no index on time alone).
"""

from copy import copy
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from uuid import UUID

from django.db import connection
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from iothub.api.rules import REPLAYED_OPTIONS
from iothub.devices.models import Device, DeviceStatus, DeviceType
from iothub.events.models import Event, EventStatus
from iothub.notifications.models import DeliveryStatus, NotificationDelivery, NotificationTemplate
from iothub.notifications.selectors import event_with_context_relations, notification_context
from iothub.notifications.templating import SAMPLE_CONTEXT, template_render
from iothub.rules.backtest import BacktestResult, rule_backtest
from iothub.rules.conditions import DEFAULT_COOLDOWN_MINUTES, OPERATOR_SYMBOLS
from iothub.rules.models import Rule, Severity
from iothub.rules.selectors import rule_state_view
from iothub.rules.services import ALARM_DEFAULTS
from iothub.telemetry.models import Telemetry

READINGS_WINDOW = timedelta(minutes=1)
OPEN_EVENT_STATUSES = (EventStatus.NEW, EventStatus.ACKNOWLEDGED)


@dataclass(frozen=True)
class Overview:
    devices_by_status: dict[str, int]
    devices_total: int
    open_events_by_severity: dict[str, int]
    open_events_total: int
    deliveries_pending: int
    deliveries_failed: int
    readings_last_minute: int


def _counts(queryset: QuerySet, column: str, keys) -> dict[str, int]:
    found = dict(queryset.values_list(column).annotate(n=Count("*")).order_by())
    return {key: found.get(key, 0) for key in keys}


# Readings per minute without a time index: the hypertable is indexed on (device_id, timestamp)
# only, so "count the rows of the last minute" is answered device by device from that index,
# and only for devices whose last_seen falls in the window (a device that has not reported in
# the last minute has no reading there). Each lateral count is an index range scan of one
# device's last minute; on TimescaleDB the constant bounds also exclude every chunk but the
# newest. The cost follows the number of recent readings, never the table's size.
_READINGS_SQL = """
SELECT COALESCE(sum(recent.n), 0)
FROM devices AS d
CROSS JOIN LATERAL (
    SELECT count(*) AS n FROM telemetry AS t
    WHERE t.device_id = d.id AND t."timestamp" >= %(start)s AND t."timestamp" <= %(end)s
) AS recent
WHERE d.last_seen >= %(start)s
"""


def readings_count_recent(*, now: datetime | None = None, window: timedelta = READINGS_WINDOW) -> int:
    """How many readings are stamped within `window` before `now` (all devices)."""
    end = now or timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(_READINGS_SQL, {"start": end - window, "end": end})
        return int(cursor.fetchone()[0])


def overview_get(*, now: datetime | None = None) -> Overview:
    devices = _counts(Device.objects.all(), "status", DeviceStatus.values)
    open_events = _counts(Event.objects.filter(status__in=OPEN_EVENT_STATUSES), "severity", Severity.values)
    deliveries = _counts(
        NotificationDelivery.objects.filter(status__in=[DeliveryStatus.PENDING, DeliveryStatus.FAILED]),
        "status",
        [DeliveryStatus.PENDING, DeliveryStatus.FAILED],
    )
    return Overview(
        devices_by_status=devices,
        devices_total=sum(devices.values()),
        open_events_by_severity=open_events,
        open_events_total=sum(open_events.values()),
        deliveries_pending=deliveries[DeliveryStatus.PENDING],
        deliveries_failed=deliveries[DeliveryStatus.FAILED],
        readings_last_minute=readings_count_recent(now=now),
    )


def event_list_recent(*, limit: int = 20) -> list[Event]:
    return list(_events().order_by("-timestamp", "-id")[:limit])


def _events() -> QuerySet[Event]:
    return Event.objects.select_related("rule__device", "acknowledged_by", "resolved_by")


# ------------------------------------------------------------------------------------------------
# Devices
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceRow:
    device: Device
    primary_metric: str
    primary_value: float | int | None
    primary_at: datetime | None


def _latest(device: Device, metric: str) -> tuple[float | int | None, datetime | None]:
    entry = (device.latest_metrics or {}).get(metric)
    if not isinstance(entry, dict):
        return None, None
    stamp = entry.get("timestamp")
    return entry.get("value"), datetime.fromisoformat(stamp) if isinstance(stamp, str) else None


def device_rows(
    *,
    search: str = "",
    status: str = "",
    device_type: UUID | None = None,
    location: str = "",
) -> QuerySet[Device]:
    """Devices matching the list's filters, by name. Every value shown comes from the devices row
    itself (`latest_metrics` holds the last value of each metric), so a page costs one query."""
    queryset = Device.objects.select_related("device_type").order_by("name", "id")
    if search:
        queryset = queryset.filter(
            Q(name__icontains=search) | Q(serial_number__icontains=search) | Q(location__icontains=search)
        )
    if status:
        queryset = queryset.filter(status=status)
    if device_type:
        queryset = queryset.filter(device_type_id=device_type)
    if location:
        queryset = queryset.filter(location=location)
    return queryset


def device_row(device: Device) -> DeviceRow:
    metric = device.device_type.metric_name
    value, at = _latest(device, metric)
    return DeviceRow(device=device, primary_metric=metric, primary_value=value, primary_at=at)


def device_filter_choices() -> dict:
    return {
        "statuses": DeviceStatus.choices,
        "device_types": list(DeviceType.objects.order_by("name").values_list("id", "name")),
        "locations": list(
            Device.objects.exclude(location__isnull=True)
            .exclude(location="")
            .order_by("location")
            .values_list("location", flat=True)
            .distinct()
        ),
    }


@dataclass(frozen=True)
class ChartLine:
    """A horizontal line drawn on a metric's chart: the type's expected range or a rule."""

    value: float
    label: str
    kind: str  # "range" or "rule"


@dataclass(frozen=True)
class MetricChart:
    metric: str
    unit: str | None
    latest: float | int | None
    latest_at: datetime | None
    lines: list[ChartLine] = field(default_factory=list)


@dataclass(frozen=True)
class DevicePage:
    device: Device
    charts: list[MetricChart]
    rules: list[Rule]
    events: list[Event]


def _rule_metric(rule: Rule, primary: str) -> str:
    return rule.metric or primary


def device_page_get(*, device_id: UUID, events_limit: int = 20) -> DevicePage:
    """A device with one chart per metric it reports (the primary metric first, even before its
    first reading), the lines to draw on each, its rules and its recent events."""
    device = Device.objects.select_related("device_type").get(id=device_id)
    device_type = device.device_type
    primary = device_type.metric_name
    rules = list(Rule.objects.filter(device=device).order_by("name", "id"))
    metrics = [primary, *sorted(m for m in (device.latest_metrics or {}) if m != primary)]
    charts = []
    for metric in metrics:
        lines = []
        if metric == primary:
            if device_type.metric_min is not None:
                minimum = device_type.metric_min
                lines.append(ChartLine(float(minimum), f"expected min {_number(minimum)}", "range"))
            if device_type.metric_max is not None:
                maximum = device_type.metric_max
                lines.append(ChartLine(float(maximum), f"expected max {_number(maximum)}", "range"))
        for rule in rules:
            if _rule_metric(rule, primary) == metric:
                label = f"{rule.name}: {OPERATOR_SYMBOLS[rule.operator]} {_number(rule.threshold)}"
                lines.append(ChartLine(float(rule.threshold), label, "rule"))
        value, at = _latest(device, metric)
        charts.append(
            MetricChart(
                metric=metric,
                unit=device_type.metric_unit if metric == primary else None,
                latest=value,
                latest_at=at,
                lines=lines,
            )
        )
    events = list(_events().filter(rule__device=device).order_by("-timestamp", "-id")[:events_limit])
    return DevicePage(device=device, charts=charts, rules=rules, events=events)


def _number(value: Decimal) -> str:
    """25.0000 -> 25, 15.5000 -> 15.5."""
    return format(value.normalize(), "f")


# ------------------------------------------------------------------------------------------------
# Events
# ------------------------------------------------------------------------------------------------
def event_rows(
    *, status: str = "", severity: str = "", device: UUID | None = None, search: str = ""
) -> QuerySet[Event]:
    """Events matching the list's filters, newest first; `open` means new or acknowledged."""
    queryset = _events().order_by("-timestamp", "-id")
    if status == "open":
        queryset = queryset.filter(status__in=OPEN_EVENT_STATUSES)
    elif status:
        queryset = queryset.filter(status=status)
    if severity:
        queryset = queryset.filter(severity=severity)
    if device:
        queryset = queryset.filter(rule__device_id=device)
    if search:
        queryset = queryset.filter(message__icontains=search)
    return queryset


def event_filter_choices() -> dict:
    return {
        "statuses": [("open", "Open (new or acknowledged)"), *EventStatus.choices],
        "severities": Severity.choices,
        "devices": list(Device.objects.order_by("name").values_list("id", "name")),
    }


@dataclass(frozen=True)
class EventPage:
    event: Event
    reading: Telemetry | None
    deliveries: list[NotificationDelivery]


def event_page_get(*, event_id: int) -> EventPage:
    """An event with the reading that raised it (while retention keeps it) and its deliveries."""
    event = _events().get(id=event_id)
    reading = None
    if event.telemetry_id is not None:
        # The device narrows the primary key lookup to that device's rows in every chunk.
        reading = Telemetry.objects.filter(id=event.telemetry_id, device_id=event.rule.device_id).first()
    deliveries = list(event.deliveries.select_related("template").order_by("created_at", "id"))
    return EventPage(event=event, reading=reading, deliveries=deliveries)


# ------------------------------------------------------------------------------------------------
# Rules and notification templates
# ------------------------------------------------------------------------------------------------
def rule_rows(*, device: UUID | None = None) -> QuerySet[Rule]:
    """Rules by name, each with how many of its events are open (one grouped count, on the events'
    rule index)."""
    queryset = Rule.objects.select_related("device__device_type", "state").order_by("name", "id")
    if device:
        queryset = queryset.filter(device_id=device)
    return queryset.annotate(open_events=Count("events", filter=Q(events__status__in=OPEN_EVENT_STATUSES)))


@dataclass(frozen=True)
class RuleRow:
    rule: Rule
    state: dict  # as the API shows it


def rule_row(rule: Rule) -> RuleRow:
    return RuleRow(rule=rule, state=rule_state_view(rule))


def rule_filter_choices() -> dict:
    return {"devices": list(Device.objects.order_by("name").values_list("id", "name"))}


@dataclass(frozen=True)
class RulePage:
    rule: Rule
    metric: str  # the metric the rule reads
    state: dict  # as the API shows it: phase, since, last_reading_at, open_event
    open_events: int
    events: list[Event]


def rule_page_get(*, rule_id: UUID, events_limit: int = 10) -> RulePage:
    rule = Rule.objects.select_related("device__device_type", "state").get(id=rule_id)
    events = list(_events().filter(rule=rule).order_by("-timestamp", "-id")[:events_limit])
    return RulePage(
        rule=rule,
        metric=_rule_metric(rule, rule.device.device_type.metric_name),
        state=rule_state_view(rule),
        open_events=rule.events.filter(status__in=OPEN_EVENT_STATUSES).count(),
        events=events,
    )


@dataclass(frozen=True)
class DraftBacktest:
    result: BacktestResult
    start: datetime
    end: datetime
    not_replayed: list[str]  # options set on the draft that a replay has nothing to say about


def rule_draft_backtest(*, rule: Rule, span: timedelta, now: datetime | None = None) -> DraftBacktest:
    """What a rule as drafted in a form (saved or not) would have raised and resolved on the
    device's readings stored over the last `span`: the API's backtest, the live state machine's
    replay. Reminders and escalation follow acknowledgements, which no replay knows: named."""
    end = now or timezone.now()
    start = end - span
    draft = copy(rule)
    if draft.cooldown_minutes is None:
        draft.cooldown_minutes = DEFAULT_COOLDOWN_MINUTES
    result = rule_backtest(
        device_id=rule.device_id,
        metric=_rule_metric(rule, rule.device.device_type.metric_name),
        rule=draft,
        start=start,
        end=end,
    )
    not_replayed = [
        name
        for name, default in ALARM_DEFAULTS.items()
        if name not in REPLAYED_OPTIONS and getattr(rule, name) != default
    ]
    return DraftBacktest(result=result, start=start, end=end, not_replayed=not_replayed)


def template_rows() -> QuerySet[NotificationTemplate]:
    return NotificationTemplate.objects.order_by("name", "id")


def template_choices() -> list[tuple[int, str]]:
    """Active templates, for the rule form's hint on `template_id`."""
    return list(NotificationTemplate.objects.filter(is_active=True).order_by("name").values_list("id", "name"))


@dataclass(frozen=True)
class TemplatePreview:
    rendered: str
    event_id: int | None  # None: the sample event


def template_preview(*, text: str, event_id: int | None = None) -> TemplatePreview:
    """A template's text rendered as a delivery would carry it, for an event or for the sample
    event; raises Event.DoesNotExist for an unknown event."""
    if event_id is None:
        context = SAMPLE_CONTEXT
    else:
        context = notification_context(event=event_with_context_relations(event_id=event_id))
    return TemplatePreview(rendered=template_render(text, context), event_id=event_id)
