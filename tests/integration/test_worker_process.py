"""A real Celery worker process, on Redis with PostgreSQL, and on the embedded broker."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import redis

from curation.settings import load_settings
from curation.store import LocalImageStore
from tests.conftest import REDIS_URL, REQUIRE_SERVICES
from tests.factories import jpeg
from tests.integration.workerproc import client_app, running_worker, worker_env

pytestmark = pytest.mark.slow


def _redis_or_skip() -> None:
    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except redis.RedisError as error:
        if REQUIRE_SERVICES:
            raise RuntimeError(f"Redis is required but unreachable: {error}") from error
        pytest.skip(f"Redis unreachable at {REDIS_URL}")


def _plant_orphan(store_dir: Path) -> Path:
    store = LocalImageStore(store_dir)
    key = "ab/cd/" + "ab" * 32 + ".jpg"
    store.put(key, jpeg(1))
    path = store.path_for(key)
    old = time.time() - 7200
    os.utime(path, (old, old))
    return path


@pytest.mark.postgres
@pytest.mark.redis
def test_worker_on_redis_and_postgres_runs_tasks(tmp_path: Path, pg_url: str) -> None:
    _redis_or_skip()
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    env = worker_env(
        data_dir=tmp_path / "var",
        database_url=pg_url,
        broker_url=REDIS_URL,
        result_backend=REDIS_URL,
    )
    orphan = _plant_orphan(tmp_path / "var" / "images")
    app = client_app(broker_url=REDIS_URL, result_backend=REDIS_URL)
    with running_worker(env, tmp_path / "worker.log"):
        assert app.send_task("curation.system.ping").get(timeout=30) == {"ok": True, "images": 0}
        removed = app.send_task("curation.store.collect_orphans").get(timeout=30)
    assert removed == {"removed": 1, "fine_tuning_leftovers": []}
    assert not orphan.exists()
    client.flushdb()


def test_worker_on_embedded_filesystem_broker(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "var"
    result_backend = f"db+sqlite:///{tmp_path / 'results.db'}"
    env = worker_env(
        data_dir=data_dir, database_url=sqlite_url, broker_url=None, result_backend=result_backend
    )
    # The client reads the same default broker folders the worker will use.
    monkeypatch.setenv("CURATION_DATA_DIR", str(data_dir))
    monkeypatch.delenv("CURATION_BROKER_URL", raising=False)
    settings = load_settings()
    assert settings.broker_url == "filesystem://"
    app = client_app(
        broker_url=settings.broker_url,
        result_backend=result_backend,
        transport_options=settings.broker_transport_options,
    )
    # Sent before the worker starts: the message waits on disk, no server needed.
    pending = app.send_task("curation.system.ping")
    with running_worker(env, tmp_path / "worker.log"):
        assert pending.get(timeout=30) == {"ok": True, "images": 0}
