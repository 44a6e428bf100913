"""Monitoring: Prometheus metrics, the request log, and what `/metrics` exposes."""
