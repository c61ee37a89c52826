"""Celery: the app, thin tasks, the beat schedule."""
