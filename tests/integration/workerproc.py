"""Start a real Celery worker process for a test, and a client app to talk to it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from celery import Celery

READY_TIMEOUT = 60.0


def worker_env(
    *, data_dir: Path, database_url: str, broker_url: str | None, result_backend: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CURATION_")}
    env.update(
        CURATION_ENV="test",
        CURATION_DATA_DIR=str(data_dir),
        CURATION_DATABASE_URL=database_url,
        CURATION_RESULT_BACKEND=result_backend,
        CURATION_SECRET_KEY="test-secret",
    )
    if broker_url is not None:
        env["CURATION_BROKER_URL"] = broker_url
    return env


@contextmanager
def _running_celery(
    args: list[str], env: dict[str, str], log_path: Path, *, ready: bytes, what: str
) -> Iterator[subprocess.Popen[bytes]]:
    """A ``celery`` subcommand, yielded once its log shows ``ready``; stopped afterwards."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.app", *args, "--loglevel=INFO"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + READY_TIMEOUT
            while ready not in log_path.read_bytes():
                if process.poll() is not None:
                    raise RuntimeError(
                        f"{what} exited early:\n{log_path.read_text(errors='replace')}"
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{what} not ready:\n{log_path.read_text(errors='replace')}")
                time.sleep(0.2)
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def running_worker(
    env: dict[str, str], log_path: Path, *, queues: str = "default", name: str = "test"
) -> Iterator[subprocess.Popen[bytes]]:
    args = ["worker", "-Q", queues, "--concurrency", "1", "--without-gossip", "--without-mingle"]
    args += ["-n", f"{name}-{os.getpid()}@%h"]
    with _running_celery(args, env, log_path, ready=b" ready.", what="worker") as process:
        yield process


def client_app(
    *, broker_url: str, result_backend: str, transport_options: dict[str, object] | None = None
) -> Celery:
    app = Celery("test-client", broker=broker_url, backend=result_backend)
    app.conf.broker_transport_options = transport_options or {}
    app.conf.task_default_queue = "default"
    return app


@contextmanager
def running_beat(env: dict[str, str], folder: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real ``celery beat`` with its own schedule file and pid file under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    args = ["beat", "--schedule", str(folder / "schedule"), "--pidfile", str(folder / "beat.pid")]
    with _running_celery(
        args, env, folder / "beat.log", ready=b"beat: Starting", what="beat"
    ) as process:
        yield process
