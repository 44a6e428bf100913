"""The ingest shortcut: when no rule's condition holds for any reading, nothing can raise an event
and the write needs no transaction block. `readings_may_trigger` decides, with no database."""

from datetime import UTC, datetime
from decimal import Decimal

from iothub.devices.models import Device, DeviceType
from iothub.ingest.evaluation import readings_may_trigger
from iothub.rules.models import Rule
from iothub.telemetry.services import NewReading

DEVICE = Device(device_type=DeviceType(metric_name="vibration"))
AT = datetime(2025, 1, 21, 10, tzinfo=UTC)


def reading(**metrics):
    return NewReading(timestamp=AT, payload={"version": "0.0.1", "serial_number": "X", "metrics": metrics})


def rule(operator="gt", threshold="15", metric=None):
    return Rule(operator=operator, threshold=Decimal(threshold), metric=metric)


def test_no_rules_never_trigger():
    assert not readings_may_trigger(device=DEVICE, readings=[reading(vibration=99)], rules=[])


def test_a_reading_over_the_threshold_of_the_primary_metric_may_trigger():
    assert readings_may_trigger(device=DEVICE, readings=[reading(vibration=15.5)], rules=[rule()])


def test_readings_under_every_threshold_do_not():
    rules = [rule(), rule("lt", "0"), rule("gt", "90", metric="temperature")]
    readings = [reading(vibration=3, temperature=80), reading(vibration=14.9)]
    assert not readings_may_trigger(device=DEVICE, readings=readings, rules=rules)


def test_one_reading_of_a_batch_is_enough():
    readings = [reading(vibration=3), reading(vibration=3), reading(temperature=91)]
    assert readings_may_trigger(device=DEVICE, readings=readings, rules=[rule("gt", "90", metric="temperature")])


def test_a_reading_without_the_rules_metric_does_not():
    assert not readings_may_trigger(device=DEVICE, readings=[reading(temperature=99)], rules=[rule()])
