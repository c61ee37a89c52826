"""Landmark class names: slugs, search keys, lookup and creation."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from curation.exceptions import RejectedInput
from curation.models import ClassAlias, ClassStatus, LandmarkClass

MAX_CLASS_NAME = 200


def search_key(name: str) -> str:
    """Fold case, accents, spacing and punctuation, keeping letters of every script.

    "Gyeongbokgung Palace", "gyeongbokgung-palace" and "Gyeongbokgung_palace"
    share one key; Hangul syllables survive (NFKD splits them into jamo, NFC
    puts them back together).
    """
    decomposed = unicodedata.normalize("NFKD", name)
    stripped = "".join(c for c in decomposed if unicodedata.category(c) != "Mn")
    folded = unicodedata.normalize("NFC", stripped).casefold()
    return "".join(c for c in folded if c.isalnum())


def slugify(name: str) -> str:
    text = unicodedata.normalize("NFKD", name)
    text = "".join(c for c in text if unicodedata.category(c) != "Mn")
    text = unicodedata.normalize("NFC", text).casefold()
    text = re.sub(r"[^\w]+", "-", text).strip("-_")
    text = re.sub(r"[-_]+", "-", text)
    return text[:120]


def guess_language(name: str) -> str:
    if any("\uac00" <= c <= "\ud7a3" or "\u1100" <= c <= "\u11ff" for c in name):
        return "ko"
    if any("\u3040" <= c <= "\u30ff" for c in name):
        return "ja"
    if any("\u4e00" <= c <= "\u9fff" for c in name):
        return "zh"
    if name.isascii():
        return "en"
    return "und"


def clean_class_name(name: str) -> str:
    cleaned = " ".join(unicodedata.normalize("NFC", name).split())
    if not cleaned:
        raise RejectedInput("class name is empty")
    if len(cleaned) > MAX_CLASS_NAME:
        raise RejectedInput(f"class name longer than {MAX_CLASS_NAME} characters")
    if any(unicodedata.category(c).startswith("C") for c in cleaned):
        raise RejectedInput("class name contains control characters")
    if not search_key(cleaned):
        raise RejectedInput(f"class name {cleaned!r} has no letters or digits")
    return cleaned


def find_class(session: Session, name: str) -> LandmarkClass | None:
    """The class whose slug, display name or any alias matches ``name`` once folded.

    A class that is not retired is preferred over a retired one of the same name.
    """
    key = search_key(name)
    if not key:
        return None
    alias_match = select(ClassAlias.class_id).where(ClassAlias.search_key == key)
    condition: ColumnElement[bool] = LandmarkClass.id.in_(alias_match)
    # A slug is lossy (cut at 120 characters, "-2" added on a clash), so it
    # identifies a class only when the caller names the slug itself.
    if name.strip() == slugify(name):
        condition = or_(LandmarkClass.slug == name.strip(), condition)
    # A merged class's names live on in the class it went into, and a retired
    # class's names may be given to a new one: the living class wins.
    retired_last = (LandmarkClass.status == ClassStatus.RETIRED.value).asc()
    return session.scalars(
        select(LandmarkClass).where(condition).order_by(retired_last, LandmarkClass.id).limit(1)
    ).first()


def count_active_classes(session: Session, *, besides: Collection[int] = ()) -> int:
    """How many classes are active, leaving out the ids in ``besides``."""
    query = (
        select(func.count())
        .select_from(LandmarkClass)
        .where(LandmarkClass.status == ClassStatus.ACTIVE.value)
    )
    if besides:
        query = query.where(LandmarkClass.id.not_in(list(besides)))
    return int(session.scalar(query) or 0)


def find_or_create_class(
    session: Session, name: str, *, status: ClassStatus = ClassStatus.ACTIVE
) -> tuple[LandmarkClass, bool]:
    """Return the class called ``name``, creating it (with ``name`` as an alias) if new."""
    cleaned = clean_class_name(name)
    existing = find_class(session, cleaned)
    if existing is not None:
        return existing, False
    display = " ".join(cleaned.replace("_", " ").split())
    slug = _unique_slug(session, slugify(cleaned) or "class")
    landmark = LandmarkClass(slug=slug, display_name=display, status=status.value)
    landmark.aliases.append(
        ClassAlias(language=guess_language(cleaned), name=cleaned, search_key=search_key(cleaned))
    )
    session.add(landmark)
    session.flush()
    return landmark, True


def _unique_slug(session: Session, base: str) -> str:
    candidate, n = base, 2
    while session.scalar(select(LandmarkClass.id).where(LandmarkClass.slug == candidate)):
        suffix = f"-{n}"
        candidate = base[: 120 - len(suffix)] + suffix  # the column holds 120 characters
        n += 1
    return candidate
