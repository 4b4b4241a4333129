"""Alerts: life cycle, de-duplication, escalation, notification, durable store."""
