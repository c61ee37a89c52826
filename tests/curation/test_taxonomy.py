"""Class names: search keys, slugs, lookup and creation across scripts."""

from __future__ import annotations

import unicodedata

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from curation.exceptions import RejectedInput
from curation.models import ClassAlias, ClassStatus, LandmarkClass
from curation.taxonomy import (
    clean_class_name,
    find_class,
    find_or_create_class,
    guess_language,
    search_key,
    slugify,
)


def test_search_key_folds_case_spacing_and_punctuation() -> None:
    key = search_key("Gyeongbokgung Palace")
    assert key == "gyeongbokgungpalace"
    assert search_key("gyeongbokgung-palace") == key
    assert search_key("Gyeongbokgung_palace") == key
    assert search_key("  GYEONGBOKGUNG   palace!! ") == key


def test_search_key_folds_accents() -> None:
    assert search_key("Château de Versailles") == "chateaudeversailles"
    assert search_key("CHATEAU DE VERSAILLES") == "chateaudeversailles"
    assert search_key(unicodedata.normalize("NFD", "Château")) == "chateau"
    assert search_key("Straße") == "strasse"


def test_search_key_keeps_hangul_syllables() -> None:
    assert search_key("경복궁") == "경복궁"
    assert search_key("경복 궁") == "경복궁"
    assert search_key(unicodedata.normalize("NFD", "경복궁")) == "경복궁"
    assert search_key("東京タワー") == "東京タワー"


def test_slugify() -> None:
    assert slugify("Taj Mahal") == "taj-mahal"
    assert slugify("The Roman  Colosseum!") == "the-roman-colosseum"
    assert slugify("Château de Versailles") == "chateau-de-versailles"
    assert slugify("under_score--dash") == "under-score-dash"
    assert slugify("경복궁 별관") == "경복궁-별관"
    assert len(slugify("x" * 500)) == 120


@pytest.mark.parametrize(
    ("name", "language"),
    [("경복궁", "ko"), ("東京タワー", "ja"), ("故宫", "zh"), ("Petra", "en"), ("Château", "und")],
)
def test_guess_language(name: str, language: str) -> None:
    assert guess_language(name) == language


def test_clean_class_name_collapses_spacing_and_normalises() -> None:
    assert clean_class_name("  Taj   Mahal \t") == "Taj Mahal"
    assert clean_class_name(unicodedata.normalize("NFD", "Château")) == "Château"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "class name is empty"),
        ("   \t ", "class name is empty"),
        ("x" * 201, "class name longer than 200 characters"),
        ("Petra\u200b", "class name contains control characters"),
        ("Pe\x00tra", "class name contains control characters"),
        ("!!! ---", "class name '!!! ---' has no letters or digits"),
    ],
)
def test_clean_class_name_rejects(name: str, reason: str) -> None:
    with pytest.raises(RejectedInput) as caught:
        clean_class_name(name)
    assert caught.value.reason == reason


def test_find_or_create_class_creates_once_with_an_alias(db_session: Session) -> None:
    landmark, created = find_or_create_class(db_session, "Gyeongbokgung_Palace")
    assert created
    assert landmark.slug == "gyeongbokgung-palace"
    assert landmark.display_name == "Gyeongbokgung Palace"
    assert landmark.status == "active"
    assert [(a.language, a.name, a.search_key) for a in landmark.aliases] == [
        ("en", "Gyeongbokgung_Palace", "gyeongbokgungpalace")
    ]
    again, created_again = find_or_create_class(db_session, "gyeongbokgung  palace")
    assert not created_again
    assert again.id == landmark.id
    assert len(db_session.scalars(select(LandmarkClass)).all()) == 1


@pytest.mark.parametrize(
    ("created_as", "looked_up_as"),
    [
        ("경복궁", "경복 궁"),
        ("경복궁", unicodedata.normalize("NFD", "경복궁")),
        ("Château de Versailles", "chateau de versailles"),
        ("Château de Versailles", "CHATEAU-DE-VERSAILLES"),
        ("Sagrada Família", "sagrada familia"),
        ("Christ The Redeemer Statue", "christ_the_redeemer_statue"),
    ],
)
def test_find_class_with_other_spacing_case_and_accents(
    db_session: Session, created_as: str, looked_up_as: str
) -> None:
    landmark, created = find_or_create_class(db_session, created_as)
    assert created
    found = find_class(db_session, looked_up_as)
    assert found is not None and found.id == landmark.id


def test_find_class_by_slug_and_by_extra_alias(db_session: Session) -> None:
    landmark, _ = find_or_create_class(db_session, "Gyeongbokgung")
    landmark.aliases.append(
        ClassAlias(language="ko", name="경복궁", search_key=search_key("경복궁"))
    )
    db_session.flush()
    assert find_class(db_session, "gyeongbokgung").id == landmark.id  # type: ignore[union-attr]
    assert find_class(db_session, "경복궁").id == landmark.id  # type: ignore[union-attr]
    assert find_class(db_session, "Namsan Tower") is None
    assert find_class(db_session, "!!!") is None


def test_new_class_status_is_passed_through(db_session: Session) -> None:
    landmark, _ = find_or_create_class(db_session, "Namsan", status=ClassStatus.PROPOSED)
    assert landmark.status == "proposed"


def test_names_sharing_a_truncated_slug_are_different_classes(db_session: Session) -> None:
    # The slug keeps 120 characters; two names that differ after that are two
    # classes, and the second must not be taken for the first by its slug.
    first_name = "a" * 150
    second_name = "a" * 149 + "b"
    first, created_first = find_or_create_class(db_session, first_name)
    second, created_second = find_or_create_class(db_session, second_name)
    assert created_first and created_second
    assert first.id != second.id
    assert second.slug == "a" * 118 + "-2"  # fits the 120-character column
    assert find_class(db_session, second_name).id == second.id  # type: ignore[union-attr]
    assert find_class(db_session, first_name).id == first.id  # type: ignore[union-attr]


def test_a_disambiguated_slug_still_finds_its_class(db_session: Session) -> None:
    find_or_create_class(db_session, "a" * 150)
    second, _ = find_or_create_class(db_session, "a" * 149 + "b")
    assert find_class(db_session, second.slug).id == second.id  # type: ignore[union-attr]
