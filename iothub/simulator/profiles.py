"""How simulated machines behave: one signal per device type, with noise, slow drift and rare
anomalies. Pure functions of a seeded random generator, so a run can be replayed and tested
without a database or a network.

- vibration (mm/s RMS, ISO 10816 scale): a healthy machine runs near 3 mm/s; bearing wear drifts it
  up slowly; an anomaly is a spike well past the type's 25 mm/s ceiling.
- temperature (°C): a process near 45 °C with a slow daily swing; an anomaly is overheating.
- pressure (bar): a line held near 6 bar that wanders a little; an anomaly is a burst or a drop.

Every device also reports the secondary metrics a real one would (a vibration sensor on a press
reports its temperature and operating hours, as in the spec's example payload).
"""

import math
import random
from dataclasses import dataclass, field
from decimal import Decimal


@dataclass(frozen=True)
class TypeSpec:
    """A device type the simulator can create: its registry fields and its serial prefix."""

    name: str
    metric_name: str
    metric_unit: str
    metric_min: Decimal
    metric_max: Decimal
    serial_prefix: str
    device_name: str


TYPES: tuple[TypeSpec, ...] = (
    TypeSpec("vibration_sensor", "vibration", "mm_s", Decimal("0"), Decimal("25"), "VIB", "Press"),
    TypeSpec("temperature_sensor", "temperature", "celsius", Decimal("-10"), Decimal("90"), "TMP", "Oven"),
    TypeSpec("pressure_sensor", "pressure", "bar", Decimal("0"), Decimal("10"), "PRS", "Pump"),
)
TYPES_BY_METRIC = {spec.metric_name: spec for spec in TYPES}


@dataclass
class Machine:
    """The state of one simulated machine; `reading()` advances it by `dt` seconds."""

    metric: str
    rng: random.Random
    anomaly_rate: float
    elapsed: float = 0.0
    operating_hours: float = 0.0
    wander: float = 0.0  # a bounded random walk (pressure) or wear (vibration)
    phase: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.phase = self.rng.uniform(0, 2 * math.pi)
        self.operating_hours = round(self.rng.uniform(100, 20000), 1)

    def reading(self, dt: float) -> tuple[dict[str, float], bool]:
        """The next metrics, and whether this reading is an anomaly."""
        self.elapsed += dt
        self.operating_hours += dt / 3600
        anomaly = self.rng.random() < self.anomaly_rate
        rng = self.rng
        if self.metric == "vibration":
            # Wear: about +0.5 mm/s per simulated hour, capped well inside the range.
            self.wander = min(self.wander + dt * 0.5 / 3600, 8.0)
            value = 3.0 + self.wander + 0.6 * math.sin(self.elapsed / 40 + self.phase) + rng.gauss(0, 0.35)
            if anomaly:
                value = rng.uniform(26, 40)
            metrics = {
                "vibration": max(0.05, value),
                "temperature": 41 + 0.3 * value + rng.gauss(0, 0.2),
                "operating_hours": self.operating_hours,
            }
        elif self.metric == "temperature":
            value = 45 + 4 * math.sin(self.elapsed / 600 + self.phase) + rng.gauss(0, 0.3)
            if anomaly:
                value = rng.uniform(92, 120)
            metrics = {"temperature": value, "humidity": 40 + 5 * math.sin(self.elapsed / 900) + rng.gauss(0, 0.5)}
        elif self.metric == "pressure":
            self.wander = max(-1.0, min(1.0, self.wander + rng.gauss(0, 0.01)))
            value = 6 + self.wander + rng.gauss(0, 0.05)
            if anomaly:
                value = rng.choice([rng.uniform(10.5, 14), rng.uniform(-0.5, -0.1)])
            metrics = {"pressure": value, "flow_rate": 120 + 20 * self.wander + rng.gauss(0, 1.5)}
        else:
            raise ValueError(f"no profile for metric {self.metric!r}")
        return {name: round(v, 4) for name, v in metrics.items()}, anomaly
