"""Wire settings to an engine, a session factory and an image store."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from curation.db import make_engine, make_session_factory
from curation.settings import Settings, load_settings
from curation.store import LocalImageStore


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    factory: sessionmaker[Session]
    store: LocalImageStore

    def dispose(self) -> None:
        self.engine.dispose()


def build_runtime(settings: Settings | None = None) -> Runtime:
    settings = settings or load_settings()
    engine = make_engine(settings.database_url)
    return Runtime(
        settings=settings,
        engine=engine,
        factory=make_session_factory(engine),
        store=LocalImageStore(settings.image_store_dir),
    )
