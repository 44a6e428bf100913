"""`GET /metrics`: the hub's metrics in Prometheus' text format.

Who may scrape: a client presenting `Authorization: Bearer <IOTHUB_METRICS_TOKEN>` when that
setting is set, or a client whose address is in IOTHUB_METRICS_ALLOWED_NETWORKS (loopback by
default); anyone else gets 403. The address is the TCP peer's: behind a reverse proxy every
client looks like the proxy, so there use the token (or keep /metrics off the proxy).
"""

import hmac
import ipaddress
import os
from functools import cache

from django.conf import settings
from django.http import HttpResponse, HttpResponseForbidden
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

from iothub.monitoring.collectors import HubStateCollector


@cache
def _networks() -> tuple:
    return tuple(ipaddress.ip_network(item, strict=False) for item in settings.IOTHUB_METRICS_ALLOWED_NETWORKS)


def scrape_allowed(request) -> bool:
    token = settings.IOTHUB_METRICS_TOKEN
    if token:
        presented = request.headers.get("Authorization", "")
        if presented.startswith("Bearer ") and hmac.compare_digest(presented[7:].encode(), token.encode()):
            return True
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in network for network in _networks())


def _registry() -> CollectorRegistry:
    """Per scrape: the counters of every process (multiprocess mode) or of this one, plus the
    database's state."""
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_DefaultMetrics())
    registry.register(HubStateCollector())
    return registry


class _DefaultMetrics:
    """The process's own registry (counters, and the process and platform collectors)."""

    def collect(self):
        return REGISTRY.collect()


@require_GET
def metrics(request):
    if not scrape_allowed(request):
        return HttpResponseForbidden(
            "Metrics are served to the loopback address, IOTHUB_METRICS_ALLOWED_NETWORKS, or with "
            "Authorization: Bearer <IOTHUB_METRICS_TOKEN>.\n",
            content_type="text/plain",
        )
    return HttpResponse(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)
