"""Device registry: device types (primary metric, unit, expected range) and devices with their
own credential. Knows nothing of HTTP."""
