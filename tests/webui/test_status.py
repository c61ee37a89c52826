from __future__ import annotations

from pathlib import Path

from curation.ingest.folders import crawl_items
from curation.ingest.records import IngestSummary
from curation.ingest.runner import IngestRunner
from curation.runtime import Runtime
from tests.factories import jpeg
from webui import create_app


def _app(runtime: Runtime):
    return create_app({"TESTING": True}, runtime=runtime)


def test_health_reports_database_ok(runtime: Runtime) -> None:
    response = _app(runtime).test_client().get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"ok": True, "database": "ok"}


def test_health_reports_unreachable_database(tmp_path: Path, settings) -> None:
    from dataclasses import replace

    from curation.runtime import build_runtime

    broken = build_runtime(replace(settings, database_url=f"sqlite:///{tmp_path}/no/such/dir/x.db"))
    response = create_app({"TESTING": True}, runtime=broken).test_client().get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["ok"] is False


def test_overview_and_stats_count_what_was_ingested(runtime: Runtime, tmp_path: Path) -> None:
    folder = tmp_path / "crawl"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(jpeg(1))
    (folder / "b.jpg").write_bytes(jpeg(2))
    summary = IngestSummary()
    IngestRunner(runtime.factory, runtime.store, runtime.settings).run(
        crawl_items(folder, crawler="bot", manifest=None, summary=summary),
        actor="test",
        action="t",
        summary=summary,
        parallel=False,
    )
    client = _app(runtime).test_client()
    stats = client.get("/api/v1/stats").get_json()
    assert stats["images"] == 2
    assert stats["sources"] == {"crawl": 2}
    page = client.get("/")
    assert page.status_code == 200
    assert b"Near-duplicate groups" in page.data


def test_secret_key_and_cookie_flags_come_from_settings(runtime: Runtime) -> None:
    app = _app(runtime)
    assert app.config["SECRET_KEY"] == "test-secret"
    assert app.config["SESSION_COOKIE_HTTPONLY"] is True
