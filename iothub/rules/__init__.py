"""Threshold rules per device and the pure comparison that evaluates them."""
