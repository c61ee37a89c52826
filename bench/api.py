"""REST API latency and throughput through gunicorn: /api/v1/predict, then /api/v1/reports.

Setup, in a throwaway data folder and database (SQLite by default, or a fresh
PostgreSQL database with ``--database postgres``): 3 classes x 24 generated
labelled photos (a colour per class, plus noise), embedded by the configured
backbone (``mobilenet_0.25`` with ../shared/weights/mobilenet_2_5_224_tf_no_top.h5
when that file is there, else weights "none"), a dataset snapshot, a champion
head trained on it by the real training code, and one API token.

Then ``gunicorn 'webui:create_app()'`` with --workers sync workers (no
--preload: each worker builds its own TensorFlow backbone on its first predict,
in a warm-up that is not measured) and --clients client threads, each sending
one request at a time, back to back, for --seconds:

* predict: a 640x480 JPEG (one of 32) to /api/v1/predict (top_k 5);
* reports: a new 640x480 JPEG each time (reports are ingested synchronously in
  the request: decode, hash, near-duplicate check, store, rows) to
  /api/v1/reports, with a reporter id drawn from --reporters ids.

The per-token rate limit is raised for the run (CURATION_API_RATE_LIMIT, and
CURATION_API_REPORTER_MAX_PER_HOUR for the reporter flood throttle): one token
sends everything here, which the defaults (120 a minute, 30 an hour per
reporter) would cut off. Prints JSON.

    .venv/bin/python bench/api.py --seconds 20
"""

from __future__ import annotations

import _path  # noqa: F401 (first: keeps bench/queue.py from shadowing the stdlib)

# isort: split

import argparse
import contextlib
import http.client
import io
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from _report import REPO_ROOT, cpu_model, source_info
from PIL import Image as PILImage
from sqlalchemy import func, select

SHARED_WEIGHTS = REPO_ROOT.parent / "shared" / "weights" / "mobilenet_2_5_224_tf_no_top.h5"
BACKBONE = "mobilenet_0.25"
CLASSES = 3
PER_CLASS = 24
PREDICT_IMAGES = 32
RATE_LIMIT = "1000000 per minute"
REPORTER_MAX_PER_HOUR = 1_000_000


# --- generated photos ---------------------------------------------------------------


def _photo(rng: np.random.Generator, tint: np.ndarray | None = None) -> PILImage.Image:
    """A smooth 640x480 photo-like picture: upsampled low-resolution noise (and a tint)."""
    small = rng.normal(128, 60, size=(30, 40, 3))
    if tint is not None:
        small = small * 0.4 + tint * 0.6
    pixels = np.clip(small, 0, 255).astype(np.uint8)
    return PILImage.fromarray(pixels).resize((640, 480), PILImage.Resampling.BILINEAR)


def _jpeg(picture: PILImage.Image) -> bytes:
    out = io.BytesIO()
    picture.save(out, format="JPEG", quality=85)
    return out.getvalue()


# --- setup ------------------------------------------------------------------------


def _environment(data_dir: Path, url: str, weights: str) -> dict[str, str]:
    return {
        "CURATION_DATA_DIR": str(data_dir),
        "CURATION_DATABASE_URL": url,
        "CURATION_BROKER_URL": "memory://",
        "CURATION_RESULT_BACKEND": "cache+memory://",
        "CURATION_SECRET_KEY": secrets.token_hex(16),
        "CURATION_BACKBONE": BACKBONE,
        "CURATION_BACKBONE_WEIGHTS": weights,
        "CURATION_API_RATE_LIMIT": RATE_LIMIT,
        "CURATION_API_REPORTER_MAX_PER_HOUR": str(REPORTER_MAX_PER_HOUR),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }


def _setup(env: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """Migrate, embed the generated labelled photos, train a champion, make a token."""
    os.environ.update(env)
    from curation import migrate
    from curation.api_tokens import create_token
    from curation.hashing import to_signed64
    from curation.labels import append_label
    from curation.learning import embedding_store
    from curation.learning.backbones import load_backbone
    from curation.learning.decode import decode_for_model
    from curation.learning.scoring import LearningPaths
    from curation.models import Image, LandmarkClass, NearDuplicateGroup
    from curation.runtime import build_runtime
    from datasets.training import TrainingOptions, request_and_train
    from datasets.versions import snapshot

    timings: dict[str, Any] = {}
    started = time.perf_counter()
    migrate.upgrade(env["CURATION_DATABASE_URL"])
    runtime = build_runtime()
    paths = LearningPaths.under(runtime.settings.data_dir)
    backbone = load_backbone(BACKBONE, env["CURATION_BACKBONE_WEIGHTS"])
    rng = np.random.default_rng(0)
    tints = rng.uniform(0, 255, size=(CLASSES, 3))
    size = backbone.spec.input_size
    pixels = np.stack(
        [
            decode_for_model(_jpeg(_photo(rng, tints[k])), size=size, box=None)
            for k in range(CLASSES)
            for _ in range(PER_CLASS)
        ]
    )
    vectors = backbone.embed_batch(pixels)
    try:
        with runtime.factory() as session, session.begin():
            classes = [
                LandmarkClass(slug=f"bench-{k}", display_name=f"Bench {k}", status="active")
                for k in range(CLASSES)
            ]
            session.add_all(classes)
            session.flush()
            space = embedding_store.get_or_create_space(
                session,
                key=backbone.space_key,
                backbone=backbone.spec.name,
                weights_id=backbone.weights_id,
                dim=backbone.spec.dim,
            )
            keys = []
            for n in range(CLASSES * PER_CLASS):
                group = NearDuplicateGroup()
                session.add(group)
                session.flush()
                sha = f"{n + 1:064x}"
                image = Image(
                    sha256=sha,
                    phash=to_signed64(n + 1),
                    width=640,
                    height=480,
                    format="jpeg",
                    byte_size=1,
                    storage_key=f"{sha[:2]}/{sha[2:4]}/{sha}.jpg",
                    stored_format="jpeg",
                    group_id=group.id,
                )
                session.add(image)
                session.flush()
                landmark = classes[n // PER_CLASS]
                append_label(
                    session, image_id=image.id, class_id=landmark.id, box=None, origin="bench"
                )
                keys.append((image.id, embedding_store.FULL))
            embedding_store.record(session, paths.embeddings, space, keys, vectors)
            snapshot(session, author="bench", message="bench v1", seed=0)
        outcome = request_and_train(
            runtime.factory,
            paths,
            requested_by="bench",
            version_ref="v1",
            space_key=backbone.space_key,
            seed=0,
            options=TrainingOptions(epochs=40, patience=8, label_issues=False),
        )
        if not outcome.promoted:
            raise SystemExit("the bench model was not promoted to champion")
        with runtime.factory() as session, session.begin():
            plaintext = create_token(session, name="bench", actor="bench").plaintext
    finally:
        runtime.dispose()
    timings["setup_s"] = round(time.perf_counter() - started, 1)
    timings["space_key"] = backbone.space_key
    timings["champion_test_accuracy"] = round(float(outcome.test_metrics["accuracy"]), 3)
    return plaintext, timings


def _count_reports(url: str) -> int:
    from curation.db import make_engine, make_session_factory
    from curation.models import ApiReport

    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            return int(session.scalar(select(func.count()).select_from(ApiReport)) or 0)
    finally:
        engine.dispose()


# --- gunicorn -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def _gunicorn(env: dict[str, str], port: int, workers: int, log: Path) -> Iterator[None]:
    command = [
        str(REPO_ROOT / ".venv" / "bin" / "gunicorn"),
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--timeout",
        "120",  # a worker's first predict builds the backbone
        "webui:create_app()",
    ]
    with log.open("wb") as out:
        server = subprocess.Popen(
            command, cwd=REPO_ROOT, env=os.environ | env, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    status, _ = _request(port, "GET", "/api/v1/openapi.json", b"", {})
                    if status == 200:
                        break
                except OSError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"gunicorn did not start; see {log}")
                time.sleep(0.2)
            yield
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


# --- clients ------------------------------------------------------------------------


def _multipart(fields: dict[str, str], image: bytes) -> tuple[bytes, str]:
    boundary = secrets.token_hex(12)
    parts = []
    for name, value in fields.items():
        header = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
        parts.append(f"{header}{value}\r\n".encode())
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="p.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n".encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def _request(
    port: int, method: str, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, bytes]:
    # A new connection per request: gunicorn's sync workers close each one anyway.
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


Body = Callable[[int, int], tuple[bytes, str]]  # (client, sequence) -> body, content type


def _load(
    port: int, path: str, token: str, make_body: Body, clients: int, seconds: float
) -> dict[str, Any]:
    """``clients`` threads, each one request at a time for ``seconds``; latencies in ms."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    statuses: list[Counter[str]] = [Counter() for _ in range(clients)]
    barrier = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client(k: int) -> None:
        barrier.wait()
        sequence = 0
        while time.perf_counter() < stop_at[0]:
            body, content_type = make_body(k, sequence)
            sequence += 1
            headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type}
            started = time.perf_counter()
            try:
                status, _ = _request(port, "POST", path, body, headers)
                statuses[k][str(status)] += 1
            except OSError as error:
                statuses[k][type(error).__name__] += 1
                continue
            latencies[k].append((time.perf_counter() - started) * 1000)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    stop_at[0] = time.perf_counter() + seconds
    started = time.perf_counter()
    barrier.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    total: Counter[str] = Counter()
    for counts in statuses:
        total.update(counts)
    ms = np.asarray([x for per in latencies for x in per])
    ok = sum(n for status, n in total.items() if status.startswith("2"))
    requests = sum(total.values())

    def pct(q: float) -> float | None:
        return round(float(np.percentile(ms, q)), 1) if len(ms) else None

    return {
        "requests": requests,
        "ok": ok,
        "errors": requests - ok,
        "statuses": dict(total),
        "elapsed_s": round(elapsed, 2),
        "throughput_per_s": round(ok / elapsed, 2),
        "latency_ms": {
            "p50": pct(50),
            "p95": pct(95),
            "p99": pct(99),
            "mean": round(float(ms.mean()), 1) if len(ms) else None,
            "max": round(float(ms.max()), 1) if len(ms) else None,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each run")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers")
    parser.add_argument("--warmup", type=float, default=5.0, help="unmeasured predict seconds")
    parser.add_argument("--reporters", type=int, default=1000, help="distinct reporter ids")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--keep", action="store_true", help="keep the data folder")
    args = parser.parse_args()

    weights = str(SHARED_WEIGHTS) if SHARED_WEIGHTS.is_file() else "none"
    folder = Path(tempfile.mkdtemp(prefix="api-bench-"))
    results: dict[str, Any] = {
        "benchmark": "bench/api.py",
        "source": source_info(),
        "cpus": os.cpu_count(),
        "cpu": cpu_model(),
        "settings": {
            "seconds": args.seconds,
            "clients": args.clients,
            "gunicorn": {
                "app": "webui:create_app()",
                "worker_class": "sync",
                "workers": args.workers,
                "preload": False,
                "timeout_s": 120,
            },
            "database": args.database,
            "backbone": BACKBONE,
            "weights": weights if weights == "none" else SHARED_WEIGHTS.name,
            "image": "640x480 JPEG, quality 85",
            "predict_top_k": 5,
            "reporters": args.reporters,
            "CURATION_API_RATE_LIMIT": RATE_LIMIT,
            "CURATION_API_REPORTER_MAX_PER_HOUR": REPORTER_MAX_PER_HOUR,
            "warmup_s": args.warmup,
        },
    }
    with contextlib.ExitStack() as stack:
        if args.database == "postgres":
            from _postgres import fresh_database

            url = stack.enter_context(fresh_database())
        else:
            url = f"sqlite:///{folder / 'bench.db'}"
        env = _environment(folder / "var", url, weights)
        token, setup = _setup(env)
        results["setup"] = setup
        rng = np.random.default_rng(1)
        predict_images = [_jpeg(_photo(rng)) for _ in range(PREDICT_IMAGES)]
        predict_bodies = [_multipart({"top_k": "5"}, image) for image in predict_images]

        def predict_body(k: int, sequence: int) -> tuple[bytes, str]:
            return predict_bodies[(k * 7 + sequence) % len(predict_bodies)]

        def report_body(k: int, sequence: int) -> tuple[bytes, str]:
            # A new photo each time: a repeat would be found as a duplicate and skip the work.
            photo = _jpeg(_photo(np.random.default_rng((k, sequence))))
            reporter = f"user-{(k * 7919 + sequence) % args.reporters}"
            return _multipart(
                {"claimed": f"Bench {sequence % CLASSES}", "reporter_id": reporter}, photo
            )

        port = _free_port()
        log = folder / "gunicorn.log"
        with _gunicorn(env, port, args.workers, log):
            warm_started = time.perf_counter()
            warm = _load(port, "/api/v1/predict", token, predict_body, args.clients, args.warmup)
            results["warmup"] = {
                "requests": warm["requests"],
                "ok": warm["ok"],
                "elapsed_s": round(time.perf_counter() - warm_started, 1),
            }
            results["predict"] = _load(
                port, "/api/v1/predict", token, predict_body, args.clients, args.seconds
            )
            before = _count_reports(url)
            reports = _load(port, "/api/v1/reports", token, report_body, args.clients, args.seconds)
            reports["reports_stored"] = _count_reports(url) - before
            results["reports"] = reports
        lines = log.read_text(errors="replace").splitlines()
        # The exception lines of failed requests (500s), each kind once.
        results["gunicorn_errors"] = sorted({line for line in lines if "Error:" in line})[:10]
        results["gunicorn_log_tail"] = lines[-5:]
    if args.keep:
        results["data_folder"] = str(folder)
    else:
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
