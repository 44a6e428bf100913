"""The former home of the metric definitions, which now live in `iothub.metrics` (the ground
floor, so that the domain apps and flows count without importing a face). This name re-exports
them for the ingest endpoint, which still imports them from here; it goes when that import moves."""

from iothub.metrics import *  # noqa: F403
