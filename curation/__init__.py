"""Landmark curation: the domain layer (no Flask, no Celery here)."""
