"""Telemetry readings as the flows pass them around: validated (new) and stored."""

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class NewReading:
    """A validated reading, ready to store. `payload` is the message as the spec stores it."""

    timestamp: datetime
    payload: dict

    @property
    def metrics(self) -> dict[str, int | float]:
        return self.payload["metrics"]


@dataclass(frozen=True)
class StoredReading:
    """A reading as stored: the row's id and timestamp, and what it carried."""

    id: int
    timestamp: datetime
    payload: dict

    @property
    def metrics(self) -> dict[str, int | float]:
        return self.payload["metrics"]
