from sqlalchemy import select

from curation.models import Image
from curation.settings import Settings


def test_migrated_sqlite_session_is_empty(db_session):
    assert db_session.scalars(select(Image)).all() == []


def test_settings_fixture_uses_test_environment(settings: Settings):
    assert settings.environment == "test"
