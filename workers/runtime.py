"""One runtime per worker process, built lazily on the first task (not at import)."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from curation.runtime import Runtime, build_runtime

if TYPE_CHECKING:
    from curation.learning.backbones import LoadedBackbone


@cache
def worker_runtime() -> Runtime:
    return build_runtime()


@cache
def worker_backbone() -> LoadedBackbone:
    """The backbone, loaded once per worker process on its first scoring task."""
    from curation.learning.backbones import load_backbone

    settings = worker_runtime().settings
    return load_backbone(settings.backbone, settings.backbone_weights)
