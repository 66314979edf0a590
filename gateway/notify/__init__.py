"""Notification channels: one small adapter per provider behind :class:`Channel`."""
