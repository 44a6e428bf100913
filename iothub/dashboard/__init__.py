"""The dashboard: the hub's face for plant operators (overview, devices, charts, events)."""
