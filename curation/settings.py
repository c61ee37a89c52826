"""Settings, read from the environment only, in this one module.

Every default runs on one machine with nothing installed beside Python:
SQLite under ``./var/``, and kombu's filesystem transport as the Celery broker.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from curation.exceptions import ConfigurationError

ENV_PREFIX = "CURATION_"


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(ENV_PREFIX + name)
    if value is None or value.strip() == "":
        return default
    return value.strip()


def _env_int(name: str, default: int, *, minimum: int = 0) -> int:
    raw = _env(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(
            f"{ENV_PREFIX}{name} must be a whole number, got {raw!r}"
        ) from None
    if value < minimum:
        raise ConfigurationError(f"{ENV_PREFIX}{name} must be at least {minimum}, got {value}")
    return value


def _choice(name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = (_env(name, default) or default).lower()
    if value not in allowed:
        raise ConfigurationError(
            f"{ENV_PREFIX}{name} must be one of {', '.join(allowed)}, got {value!r}"
        )
    return value


def _crontab(name: str, default: str) -> str:
    """Five crontab fields (minute hour day-of-month month day-of-week), checked for shape."""
    value = " ".join((_env(name, default) or default).split())
    fields = value.split(" ")
    if len(fields) != 5 or not all(re.fullmatch(r"[0-9*/,\-]+", f) for f in fields):
        raise ConfigurationError(
            f"{ENV_PREFIX}{name} must be five crontab fields such as '0 2 * * *', got {value!r}"
        )
    return value


def _env_share(name: str, default: float) -> float:
    raw = _env(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{ENV_PREFIX}{name} must be a number, got {raw!r}") from None
    if not 0.0 <= value <= 1.0:
        raise ConfigurationError(f"{ENV_PREFIX}{name} must lie between 0 and 1, got {value}")
    return value


def _rate_limit(name: str, default: str) -> str:
    """A Flask-Limiter limit such as '120 per minute' or '10/second;1000/day'."""
    value = " ".join((_env(name, default) or default).split())
    part = r"\d+\s*(/|per)\s*(\d+\s*)?(second|minute|hour|day|month|year)s?"
    if not re.fullmatch(rf"{part}(\s*[;,]\s*{part})*", value):
        raise ConfigurationError(
            f"{ENV_PREFIX}{name} must be a rate limit such as '120 per minute', got {value!r}"
        )
    return value


@dataclass(frozen=True)
class Settings:
    """One immutable bundle of configuration; build it with :func:`load_settings`."""

    environment: str
    data_dir: Path
    database_url: str
    broker_url: str
    result_backend: str
    secret_key: str
    # Untrusted-image limits, checked before any full decode.
    max_image_bytes: int = 40 * 1024 * 1024
    max_image_pixels: int = 60_000_000
    max_filename_length: int = 255
    # Perceptual-hash Hamming distance (of 64 bits) at or under which two
    # images join one near-duplicate group. On the shared wonders7 + crawl13
    # photos every pair at 10 or less was the same photo (watermarks,
    # re-crops, colour edits); unrelated landmarks start to pair at 12.
    near_duplicate_max_distance: int = 10
    # The backbone that embeds images, and its weights: "imagenet" (Keras
    # downloads them), "none", or a path to a weights file for offline sites.
    backbone: str = "efficientnetb0"
    backbone_weights: str = "imagenet"
    queue_strategy: str = "balanced"
    queue_random_share: float = 0.05
    scoring_batch_size: int = 64
    # A scoring job sent this long ago and still pending is sent again.
    scoring_stale_seconds: int = 600
    ingest_workers: int = 0  # 0: one per CPU core
    ingest_commit_every: int = 64
    # A reviewer's claim on a queue item lapses after this long without a
    # decision (the page renews it while open), and the item returns to line.
    review_lease_seconds: int = 600
    # Which first decisions a second reviewer must confirm: "disagreements"
    # (a report the reviewer contradicts, or a change to an existing label),
    # "all", or "off".
    review_consensus: str = "disagreements"
    # A proposed class becomes active when a dataset version gives it at
    # least this many reviewed training images and test images.
    class_min_train_images: int = 20
    class_min_test_images: int = 5
    # Promotion gate: no class the champion knows may lose more than this
    # many points of recall on the frozen test split, and a new class must
    # reach this recall there.
    gate_max_class_drop: int = 5
    gate_min_new_class_recall: float = 0.5
    # Retraining: an event trigger fires after this many new labels (or when
    # a class becomes active); the scheduled run follows this crontab
    # ("minute hour day-of-month month day-of-week", UTC); a running run
    # that has not reported progress for this long is marked failed.
    retrain_after_labels: int = 500
    retrain_schedule: str = "0 2 * * *"
    retrain_every_seconds: int = 0  # above 0: this interval instead of the crontab
    training_stale_seconds: int = 900
    # The head's second fit on the unlabelled images its first is sure of
    # (curation.learning.head.self_train_head), for scheduled and triggered runs.
    self_training: bool = True
    # The REST API (/api/v1): Flask-Limiter's storage ("memory://" on one
    # process; "redis://host:6379/1" in production, shared by every web
    # worker), the limit per token, the uploads it takes, and the most
    # reports one of an app's users may send in an hour.
    ratelimit_storage_url: str = "memory://"
    api_rate_limit: str = "120 per minute"
    api_max_image_bytes: int = 10 * 1024 * 1024
    api_reporter_max_per_hour: int = 30
    # Label Studio: its server and API token, the base URL it loads images
    # from (this platform as Label Studio reaches it), the webhook's shared
    # secret, how long a sent item stays out of the web queue, and how often
    # the reconciliation pulls (webhooks are sent once, never retried).
    labelstudio_url: str | None = None
    labelstudio_token: str | None = None
    labelstudio_webhook_secret: str | None = None
    public_url: str = "http://127.0.0.1:5000"
    labelstudio_hold_seconds: int = 3 * 24 * 3600
    labelstudio_reconcile_seconds: int = 300
    broker_transport_options: dict[str, object] = field(default_factory=dict)

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    @property
    def image_store_dir(self) -> Path:
        return self.data_dir / "images"


def _default_secret_key(data_dir: Path) -> str:
    """Generate a development secret once and keep it under the data folder."""
    key_file = data_dir / "secret_key"
    if key_file.exists():
        return key_file.read_text(encoding="ascii").strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    # O_EXCL: two processes starting at once must agree on one key.
    try:
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return key_file.read_text(encoding="ascii").strip()
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(key)
    return key


def _filesystem_broker(data_dir: Path) -> tuple[str, dict[str, object]]:
    queue_dir = data_dir / "broker" / "queue"
    processed_dir = data_dir / "broker" / "processed"
    # Exchange tables; kombu's default is ./control in the working directory.
    control_dir = data_dir / "broker" / "control"
    for folder in (queue_dir, processed_dir, control_dir):
        folder.mkdir(parents=True, exist_ok=True)
    options: dict[str, object] = {
        "data_folder_in": str(queue_dir),
        "data_folder_out": str(queue_dir),
        "processed_folder": str(processed_dir),
        "control_folder": str(control_dir),
        "store_processed": False,
    }
    return "filesystem://", options


def load_settings() -> Settings:
    """Read the environment and return validated settings.

    Raises :class:`ConfigurationError` naming the variable that is wrong.
    """
    environment = (_env("ENV", "development") or "development").lower()
    if environment not in {"development", "production", "test"}:
        raise ConfigurationError(
            f"{ENV_PREFIX}ENV must be development, production or test, got {environment!r}"
        )
    data_dir = Path(_env("DATA_DIR", "./var") or "./var").expanduser().resolve()

    database_url = _env("DATABASE_URL")
    if database_url is None:
        data_dir.mkdir(parents=True, exist_ok=True)
        database_url = f"sqlite:///{data_dir / 'curation.db'}"

    broker_url = _env("BROKER_URL")
    broker_options: dict[str, object] = {}
    if broker_url is None or broker_url == "filesystem://":
        broker_url, broker_options = _filesystem_broker(data_dir)

    # Celery's database result backend keeps its own tables, so by default it
    # gets its own SQLite file rather than a place in the migrated schema.
    result_backend = _env("RESULT_BACKEND") or f"db+sqlite:///{data_dir / 'celery-results.db'}"

    secret_key = _env("SECRET_KEY")
    if secret_key is None:
        if environment == "production":
            raise ConfigurationError(f"{ENV_PREFIX}SECRET_KEY is required in production")
        secret_key = _default_secret_key(data_dir)

    return Settings(
        environment=environment,
        data_dir=data_dir,
        database_url=database_url,
        broker_url=broker_url,
        result_backend=result_backend,
        secret_key=secret_key,
        max_image_bytes=_env_int("MAX_IMAGE_BYTES", Settings.max_image_bytes, minimum=1),
        max_image_pixels=_env_int("MAX_IMAGE_PIXELS", Settings.max_image_pixels, minimum=1),
        near_duplicate_max_distance=_env_int(
            "NEAR_DUPLICATE_MAX_DISTANCE", Settings.near_duplicate_max_distance
        ),
        backbone=_env("BACKBONE", Settings.backbone) or Settings.backbone,
        backbone_weights=_env("BACKBONE_WEIGHTS", Settings.backbone_weights)
        or Settings.backbone_weights,
        queue_strategy=_choice(
            "QUEUE_STRATEGY",
            Settings.queue_strategy,
            ("balanced", "uncertainty", "label_error", "novelty", "disagreement", "random"),
        ),
        queue_random_share=_env_share("QUEUE_RANDOM_SHARE", Settings.queue_random_share),
        scoring_batch_size=_env_int("SCORING_BATCH_SIZE", Settings.scoring_batch_size, minimum=1),
        scoring_stale_seconds=_env_int(
            "SCORING_STALE_SECONDS", Settings.scoring_stale_seconds, minimum=1
        ),
        ingest_workers=_env_int("INGEST_WORKERS", Settings.ingest_workers),
        ingest_commit_every=_env_int(
            "INGEST_COMMIT_EVERY", Settings.ingest_commit_every, minimum=1
        ),
        review_lease_seconds=_env_int(
            "REVIEW_LEASE_SECONDS", Settings.review_lease_seconds, minimum=10
        ),
        review_consensus=_choice(
            "REVIEW_CONSENSUS", Settings.review_consensus, ("disagreements", "all", "off")
        ),
        class_min_train_images=_env_int(
            "CLASS_MIN_TRAIN_IMAGES", Settings.class_min_train_images, minimum=1
        ),
        class_min_test_images=_env_int("CLASS_MIN_TEST_IMAGES", Settings.class_min_test_images),
        gate_max_class_drop=_env_int("GATE_MAX_CLASS_DROP", Settings.gate_max_class_drop),
        gate_min_new_class_recall=_env_share(
            "GATE_MIN_NEW_CLASS_RECALL", Settings.gate_min_new_class_recall
        ),
        retrain_after_labels=_env_int(
            "RETRAIN_AFTER_LABELS", Settings.retrain_after_labels, minimum=1
        ),
        retrain_schedule=_crontab("RETRAIN_SCHEDULE", Settings.retrain_schedule),
        retrain_every_seconds=_env_int("RETRAIN_EVERY_SECONDS", Settings.retrain_every_seconds),
        training_stale_seconds=_env_int(
            "TRAINING_STALE_SECONDS", Settings.training_stale_seconds, minimum=30
        ),
        self_training=_choice("SELF_TRAINING", "on", ("on", "off")) == "on",
        ratelimit_storage_url=_env("RATELIMIT_STORAGE_URL", Settings.ratelimit_storage_url)
        or Settings.ratelimit_storage_url,
        api_rate_limit=_rate_limit("API_RATE_LIMIT", Settings.api_rate_limit),
        api_max_image_bytes=_env_int(
            "API_MAX_IMAGE_BYTES", Settings.api_max_image_bytes, minimum=1
        ),
        api_reporter_max_per_hour=_env_int(
            "API_REPORTER_MAX_PER_HOUR", Settings.api_reporter_max_per_hour, minimum=1
        ),
        labelstudio_url=_env("LABELSTUDIO_URL"),
        labelstudio_token=_env("LABELSTUDIO_TOKEN"),
        labelstudio_webhook_secret=_env("LABELSTUDIO_WEBHOOK_SECRET"),
        public_url=_env("PUBLIC_URL", Settings.public_url) or Settings.public_url,
        labelstudio_hold_seconds=_env_int(
            "LABELSTUDIO_HOLD_SECONDS", Settings.labelstudio_hold_seconds, minimum=60
        ),
        labelstudio_reconcile_seconds=_env_int(
            "LABELSTUDIO_RECONCILE_SECONDS", Settings.labelstudio_reconcile_seconds, minimum=10
        ),
        broker_transport_options=broker_options,
    )
