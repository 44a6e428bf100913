"""The simulated machines: readings in the type's normal band, drift, anomalies out of range."""

import random

import pytest

from iothub.simulator.profiles import TYPES, TYPES_BY_METRIC, Machine


@pytest.mark.parametrize("spec", TYPES, ids=lambda spec: spec.metric_name)
def test_normal_readings_stay_inside_the_types_range(spec):
    machine = Machine(metric=spec.metric_name, rng=random.Random(7), anomaly_rate=0.0)

    values = []
    for _ in range(2000):
        metrics, anomaly = machine.reading(dt=2.0)
        assert not anomaly
        values.append(metrics[spec.metric_name])

    assert all(float(spec.metric_min) <= v <= float(spec.metric_max) for v in values)
    assert len(set(values)) > 100, "noise: the readings vary"


@pytest.mark.parametrize("spec", TYPES, ids=lambda spec: spec.metric_name)
def test_anomalies_fall_outside_the_types_range(spec):
    machine = Machine(metric=spec.metric_name, rng=random.Random(3), anomaly_rate=1.0)

    for _ in range(200):
        metrics, anomaly = machine.reading(dt=1.0)
        value = metrics[spec.metric_name]
        assert anomaly
        assert value < float(spec.metric_min) or value > float(spec.metric_max)


def test_vibration_drifts_up_as_the_machine_wears():
    machine = Machine(metric="vibration", rng=random.Random(1), anomaly_rate=0.0)

    first_hour = [machine.reading(dt=10)[0]["vibration"] for _ in range(360)]
    for _ in range(360 * 5):
        machine.reading(dt=10)
    sixth_hour = [machine.reading(dt=10)[0]["vibration"] for _ in range(360)]

    assert sum(sixth_hour) / 360 > sum(first_hour) / 360 + 2


def test_a_seed_replays_the_same_readings():
    def run(seed):
        machine = Machine(metric="pressure", rng=random.Random(seed), anomaly_rate=0.1)
        return [machine.reading(dt=1.0) for _ in range(50)]

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_every_reading_carries_secondary_metrics_like_a_real_device():
    metrics, _ = Machine(metric="vibration", rng=random.Random(0), anomaly_rate=0).reading(dt=1)

    assert set(metrics) == {"vibration", "temperature", "operating_hours"}
    assert TYPES_BY_METRIC["vibration"].name == "vibration_sensor"
