"""ORM models. Import from here; each area lives in its own module."""

from curation.models.accounts import User, UserRole
from curation.models.api import ApiReport, ApiToken
from curation.models.audit import AuditEntry
from curation.models.dashboard import QueueSnapshot
from curation.models.datasets import (
    ClassChange,
    ClassChangeKind,
    DatasetClass,
    DatasetEntry,
    DatasetVersion,
    Split,
)
from curation.models.images import Image, NearDuplicateGroup
from curation.models.labels import Label, LabelVerdict
from curation.models.labelstudio import LabelStudioAnnotation, LabelStudioTask, TaskState
from curation.models.learning import (
    COLD_START_RANKING,
    COLD_START_STRATEGY,
    EmbeddingSpace,
    ImageEmbedding,
    ImageScore,
    JobStatus,
    ModelStatus,
    ModelVersion,
    QueueItem,
    QueueOrder,
    QueueStatus,
    ScoringJob,
)
from curation.models.review import DecisionAction, DecisionOutcome, ReviewDecision
from curation.models.sources import ImageSource, SourceKind
from curation.models.taxonomy import ClassAlias, ClassStatus, LandmarkClass
from curation.models.training import RunStatus, RunTrigger, TrainingRun

__all__ = [
    "COLD_START_RANKING",
    "COLD_START_STRATEGY",
    "ApiReport",
    "ApiToken",
    "AuditEntry",
    "ClassAlias",
    "ClassChange",
    "ClassChangeKind",
    "ClassStatus",
    "DatasetClass",
    "DatasetEntry",
    "DatasetVersion",
    "DecisionAction",
    "DecisionOutcome",
    "EmbeddingSpace",
    "Image",
    "ImageEmbedding",
    "ImageScore",
    "ImageSource",
    "JobStatus",
    "Label",
    "LabelStudioAnnotation",
    "LabelStudioTask",
    "LabelVerdict",
    "LandmarkClass",
    "ModelStatus",
    "ModelVersion",
    "NearDuplicateGroup",
    "QueueItem",
    "QueueOrder",
    "QueueSnapshot",
    "QueueStatus",
    "ReviewDecision",
    "RunStatus",
    "RunTrigger",
    "ScoringJob",
    "SourceKind",
    "Split",
    "TaskState",
    "TrainingRun",
    "User",
    "UserRole",
]
