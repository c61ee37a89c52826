"""ORM models. Import from here; each area lives in its own module."""

from curation.models.accounts import User, UserRole
from curation.models.audit import AuditEntry
from curation.models.images import Image, NearDuplicateGroup
from curation.models.labels import Label, LabelVerdict
from curation.models.learning import (
    EmbeddingSpace,
    ImageEmbedding,
    ImageScore,
    JobStatus,
    ModelStatus,
    ModelVersion,
    QueueItem,
    QueueStatus,
    ScoringJob,
)
from curation.models.sources import ImageSource, SourceKind
from curation.models.taxonomy import ClassAlias, ClassStatus, LandmarkClass

__all__ = [
    "AuditEntry",
    "ClassAlias",
    "ClassStatus",
    "EmbeddingSpace",
    "Image",
    "ImageEmbedding",
    "ImageScore",
    "ImageSource",
    "JobStatus",
    "Label",
    "LabelVerdict",
    "LandmarkClass",
    "ModelStatus",
    "ModelVersion",
    "NearDuplicateGroup",
    "QueueItem",
    "QueueStatus",
    "ScoringJob",
    "SourceKind",
    "User",
    "UserRole",
]
