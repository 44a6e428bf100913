"""Notification templates and the delivery queue (`notification_deliveries`)."""
