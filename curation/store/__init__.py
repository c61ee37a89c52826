"""Content-addressed image storage behind a small interface."""

from curation.store.base import ImageStore
from curation.store.local import LocalImageStore

__all__ = ["ImageStore", "LocalImageStore"]
