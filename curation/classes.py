"""The life of a landmark class: proposed, activated, renamed, merged, split, retired.

Every step writes a ``ClassChange`` row (what the next dataset version's
diff lists) and an audit entry. Like every domain function these take a
``Session`` and never commit. Each validates everything it was given before
it writes anything, so a refused step leaves the session as it found it and
the caller's transaction stays all or nothing.

Names: a class's display name is always one of its aliases, and lookups
(``taxonomy.find_class``, the review search) go through the aliases' folded
search keys. A rename therefore keeps the old name as an alias and it stays
findable; a merge copies the source's names onto the target. A name is taken
while a class that is not retired holds it; a retired class's names may be
reused (``find_class`` prefers the living class).

A merge relabels every image of the source and a split reopens every image
of the class, possibly many thousands: both run as set-based statements
(INSERT ... SELECT, one UPDATE, the queue's bulk writers), never a row at a time.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sqlalchemy import (
    ColumnElement,
    DateTime,
    Integer,
    String,
    cast,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from curation.accounts import Actor
from curation.exceptions import Conflict, NotFound, RejectedInput
from curation.labels import is_current
from curation.learning import bulk_write, embedding_store
from curation.learning.scores import IntArray, normalize_rows
from curation.learning.scoring import champion
from curation.learning.selection import FULL_KMEANS_MAX_IMAGES, KMEANS_RESTARTS
from curation.models import (
    AuditEntry,
    ClassAlias,
    ClassChange,
    ClassChangeKind,
    ClassStatus,
    EmbeddingSpace,
    Image,
    ImageSource,
    Label,
    LabelVerdict,
    LandmarkClass,
    QueueItem,
    QueueOrder,
    QueueStatus,
    User,
)
from curation.queue import CLASS_SPLIT_STRATEGY, current_ranking
from curation.taxonomy import (
    _unique_slug,
    clean_class_name,
    find_class,
    guess_language,
    search_key,
    slugify,
)

MAX_REASON = 2000
MAX_LANGUAGE = 16
MIN_SPLIT_PARTS = 2
# Reopened images of a split go above everything already in line: their
# class no longer exists, so they cannot wait behind routine work.
SPLIT_PRIORITY_FLOOR = 1.0
LARGEST_CLUSTERS_KEPT = 20
# "en", "ko", "zh-hant", "und": a BCP 47 primary tag and optional subtags.
_LANGUAGE = re.compile(r"[a-z]{2,3}(?:-[a-z0-9]{1,8})*", re.IGNORECASE)


# --- results ---------------------------------------------------------------------


@dataclass(frozen=True)
class ClassSummary:
    """A class as listed: its names, where it is, and how many images it labels now."""

    id: int
    slug: str
    display_name: str
    status: str
    latitude: float | None
    longitude: float | None
    aliases: list[tuple[str, str]]  # (language, name), in the order they were added
    images: int  # images whose current label is this class
    created_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "slug": self.slug,
            "display_name": self.display_name,
            "status": self.status,
            "latitude": self.latitude,
            "longitude": self.longitude,
            "aliases": [{"language": lang, "name": name} for lang, name in self.aliases],
            "images": self.images,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class MergeResult:
    source: LandmarkClass
    into: LandmarkClass
    labels_moved: int
    claims_moved: int  # user reports whose claimed class now points at ``into``
    aliases_added: list[tuple[str, str]]


@dataclass(frozen=True)
class SplitResult:
    original: LandmarkClass
    new_classes: list[LandmarkClass]
    images_reopened: int
    cluster_sizes: list[int]  # in queue order
    grouped_by: str  # "embeddings", "near_duplicates", or "none" (no images)


# --- helpers ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Who:
    id: int | None
    name: str


def _who(actor: Actor) -> _Who:
    if isinstance(actor, User):
        return _Who(actor.id, f"user:{actor.username}")
    name = " ".join(actor.split())
    if not name:
        raise RejectedInput("the actor's name is empty")
    return _Who(None, name[:200])


def _reason(reason: str) -> str:
    text = reason.strip()
    if len(text) > MAX_REASON:
        raise RejectedInput(f"the reason is longer than {MAX_REASON} characters")
    return text


def _language(language: str | None, name: str) -> str:
    if language is None or not language.strip():
        return guess_language(name)
    code = language.strip()
    if len(code) > MAX_LANGUAGE or not _LANGUAGE.fullmatch(code):
        raise RejectedInput(
            f"language {language!r} is not a language code such as en, ko, ja or zh-hant"
        )
    return code.lower()


def _location(latitude: float | None, longitude: float | None) -> tuple[float | None, float | None]:
    if latitude is None and longitude is None:
        return None, None
    if latitude is None or longitude is None:
        raise RejectedInput("give both latitude and longitude, or neither")
    lat, lon = float(latitude), float(longitude)
    if not (math.isfinite(lat) and -90.0 <= lat <= 90.0):
        raise RejectedInput(f"latitude must lie between -90 and 90, got {latitude}")
    if not (math.isfinite(lon) and -180.0 <= lon <= 180.0):
        raise RejectedInput(f"longitude must lie between -180 and 180, got {longitude}")
    return lat, lon


def _clean_names(pairs: Iterable[tuple[str | None, str]]) -> list[tuple[str, str]]:
    """Cleaned (language, name) pairs, exact repeats dropped, in the order given."""
    names: list[tuple[str, str]] = []
    for language, raw in pairs:
        name = clean_class_name(raw)
        pair = (_language(language, name), name)
        if pair not in names:
            names.append(pair)
    return names


def _label(landmark: LandmarkClass) -> str:
    return f"{landmark.display_name} ({landmark.slug})"


def _holder(session: Session, name: str, *, besides: Collection[int]) -> LandmarkClass | None:
    """The living class (not retired, not in ``besides``) that ``name`` already names."""
    alias_match = select(ClassAlias.class_id).where(ClassAlias.search_key == search_key(name))
    condition: ColumnElement[bool] = LandmarkClass.id.in_(alias_match)
    stripped = name.strip()
    if stripped == slugify(stripped):
        condition = or_(condition, LandmarkClass.slug == stripped)
    query = select(LandmarkClass).where(
        condition, LandmarkClass.status != ClassStatus.RETIRED.value
    )
    if besides:
        query = query.where(LandmarkClass.id.not_in(list(besides)))
    return session.scalars(query.order_by(LandmarkClass.id).limit(1)).first()


def _check_free(session: Session, names: Iterable[str], *, besides: Collection[int] = ()) -> None:
    for name in names:
        holder = _holder(session, name, besides=besides)
        if holder is not None:
            raise Conflict(f"the name {name!r} already belongs to class {_label(holder)}")


def _get(session: Session, class_id: int, *, lock: bool = True) -> LandmarkClass:
    # FOR NO KEY UPDATE on PostgreSQL: two changes to one class take turns,
    # while rows that merely reference the class (new labels) are not held up.
    landmark = session.get(
        LandmarkClass,
        class_id,
        with_for_update={"key_share": True} if lock else None,
        populate_existing=lock,
    )
    if landmark is None:
        raise NotFound(f"class {class_id} does not exist")
    return landmark


def _living(session: Session, class_id: int) -> LandmarkClass:
    landmark = _get(session, class_id)
    if landmark.status == ClassStatus.RETIRED.value:
        raise Conflict(f"class {_label(landmark)} is retired")
    return landmark


def _record(
    session: Session,
    landmark: LandmarkClass,
    kind: ClassChangeKind,
    details: dict[str, Any],
    who: _Who,
    reason: str,
) -> ClassChange:
    change = ClassChange(
        class_id=landmark.id,
        kind=kind.value,
        details=details,
        actor_id=who.id,
        actor=who.name,
        reason=reason,
    )
    session.add(change)
    return change


def _audit(
    session: Session, who: _Who, action: str, landmark: LandmarkClass, details: dict[str, Any]
) -> None:
    session.add(
        AuditEntry(
            actor_id=who.id,
            actor=who.name,
            action=action,
            entity_type="landmark_class",
            entity_id=landmark.id,
            details=details,
        )
    )


def _has_name(landmark: LandmarkClass, language: str, name: str) -> bool:
    return any(a.language == language and a.name == name for a in landmark.aliases)


def _add_alias(landmark: LandmarkClass, language: str, name: str) -> None:
    landmark.aliases.append(ClassAlias(language=language, name=name, search_key=search_key(name)))


def parse_alias(text: str) -> tuple[str | None, str]:
    """("ko", "경복궁") from "ko:경복궁"; (None, text) when no language code leads it.

    The language is None (guessed later from the script) when the text before
    the first colon is not a language code, so "Tokyo: Skytree" stays one name.
    """
    language, colon, name = text.partition(":")
    if colon and _LANGUAGE.fullmatch(language.strip()) and len(language.strip()) <= MAX_LANGUAGE:
        return language.strip(), name
    return None, text


# --- lookups ---------------------------------------------------------------------


def resolve_class(session: Session, reference: str) -> LandmarkClass:
    """The class a person means by ``reference``: its slug, display name or any alias.

    An exact slug wins, so a merged class stays reachable by its slug although
    its names now lead to the class it went into. Raises NotFound when no
    class goes by that name.
    """
    text = reference.strip()
    found = session.scalars(select(LandmarkClass).where(LandmarkClass.slug == text)).first()
    if found is None and text:
        found = find_class(session, text)
    if found is None:
        raise NotFound(f"no class is called {reference.strip()!r}")
    return found


def list_classes(session: Session, status: str | None = None) -> list[ClassSummary]:
    """Every class (or those with ``status``), by name, with its aliases and image count.

    The counts come from one grouped query over the current labels.
    """
    if status is not None and status not in {s.value for s in ClassStatus}:
        allowed = ", ".join(s.value for s in ClassStatus)
        raise RejectedInput(f"status must be one of {allowed}, got {status!r}")
    return _summaries(session, status=status)


def class_summary(session: Session, class_id: int) -> ClassSummary:
    """One class as ``list_classes`` shows it; NotFound for an unknown class."""
    found = _summaries(session, class_id=class_id)
    if not found:
        raise NotFound(f"class {class_id} does not exist")
    return found[0]


def _summaries(
    session: Session, *, status: str | None = None, class_id: int | None = None
) -> list[ClassSummary]:
    counts = (
        select(
            Label.class_id.label("class_id"),
            func.count(func.distinct(Label.image_id)).label("images"),
        )
        .where(Label.class_id.is_not(None), is_current())
        .group_by(Label.class_id)
    )
    query = select(LandmarkClass).order_by(func.lower(LandmarkClass.display_name), LandmarkClass.id)
    alias_query = (
        select(ClassAlias.class_id, ClassAlias.language, ClassAlias.name)
        .join(LandmarkClass, LandmarkClass.id == ClassAlias.class_id)
        .order_by(ClassAlias.id)
    )
    if status is not None:
        query = query.where(LandmarkClass.status == status)
        alias_query = alias_query.where(LandmarkClass.status == status)
    if class_id is not None:
        counts = counts.where(Label.class_id == class_id)
        query = query.where(LandmarkClass.id == class_id)
        alias_query = alias_query.where(LandmarkClass.id == class_id)
    numbers = counts.subquery()
    rows = session.execute(
        query.add_columns(func.coalesce(numbers.c.images, 0)).outerjoin(
            numbers, numbers.c.class_id == LandmarkClass.id
        )
    ).tuples()
    aliases: dict[int, list[tuple[str, str]]] = {}
    for owner, language, name in session.execute(alias_query).tuples():
        aliases.setdefault(owner, []).append((language, name))
    return [
        ClassSummary(
            id=c.id,
            slug=c.slug,
            display_name=c.display_name,
            status=c.status,
            latitude=c.latitude,
            longitude=c.longitude,
            aliases=aliases.get(c.id, []),
            images=int(images),
            created_at=c.created_at,
        )
        for c, images in rows
    ]


def class_histories(
    session: Session, class_ids: Sequence[int] | None = None
) -> dict[int, list[ClassChange]]:
    """The changes of each class (of every class if None), oldest first."""
    query = select(ClassChange).order_by(ClassChange.class_id, ClassChange.id)
    if class_ids is not None:
        query = query.where(ClassChange.class_id.in_(list(class_ids)))
    histories: dict[int, list[ClassChange]] = {}
    for change in session.scalars(query):
        histories.setdefault(change.class_id, []).append(change)
    return histories


def class_history(session: Session, class_id: int) -> list[ClassChange]:
    """The changes of one class, oldest first; NotFound for an unknown class."""
    _get(session, class_id, lock=False)
    return class_histories(session, [class_id]).get(class_id, [])


def change_as_dict(change: ClassChange) -> dict[str, Any]:
    return {
        "id": change.id,
        "class_id": change.class_id,
        "kind": change.kind,
        "details": change.details,
        "actor": change.actor,
        "reason": change.reason,
        "created_at": change.created_at.isoformat(),
    }


def describe_change(change: ClassChange) -> str:
    """One line, in words, for people reading a class's history."""
    d = change.details
    kind = ClassChangeKind(change.kind)
    if kind is ClassChangeKind.PROPOSED:
        base = f"proposed as {d.get('display_name')!r}"
        if d.get("split_from"):
            base += f", split from {d['split_from'].get('slug')}"
        return base
    if kind is ClassChangeKind.ACTIVATED:
        return f"activated with {d.get('train')} training and {d.get('test')} test images"
    if kind is ClassChangeKind.RENAMED:
        return f"renamed from {d.get('from')!r} to {d.get('to')!r}"
    if kind is ClassChangeKind.ALIAS_ADDED:
        return f"alias {d.get('name')!r} ({d.get('language')}) added"
    if kind is ClassChangeKind.MERGED:
        if "into" in d:
            return f"merged into {d.get('into_slug')}: {d.get('labels_moved')} labels moved"
        return f"absorbed {d.get('from_slug')}: {d.get('labels_moved')} labels moved"
    if kind is ClassChangeKind.SPLIT:
        names = ", ".join(str(part.get("slug")) for part in d.get("into", []))
        return (
            f"split into {names}: {d.get('images_reopened')} images reopened for review"
            f" in {d.get('clusters')} groups"
        )
    return f"retired ({d.get('labelled_images', 0)} images still labelled with it)"


# --- proposing and naming ----------------------------------------------------------


def propose_class(
    session: Session,
    name: str,
    *,
    language: str | None = None,
    aliases: Sequence[tuple[str | None, str]] = (),
    latitude: float | None = None,
    longitude: float | None = None,
    actor: Actor,
    reason: str = "",
) -> LandmarkClass:
    """A new class with status proposed, named ``name`` (its display name) and ``aliases``.

    ``aliases`` are (language, name) pairs; a language of None is guessed
    from the script. Raises Conflict naming the class that already holds any
    of the names, RejectedInput for an unusable name, language or location.
    """
    return _propose(
        session,
        name,
        language=language,
        aliases=aliases,
        latitude=latitude,
        longitude=longitude,
        who=_who(actor),
        reason=_reason(reason),
    )


def _propose(
    session: Session,
    name: str,
    *,
    language: str | None = None,
    aliases: Sequence[tuple[str | None, str]] = (),
    latitude: float | None = None,
    longitude: float | None = None,
    who: _Who,
    reason: str,
    besides: Collection[int] = (),
    extra: dict[str, Any] | None = None,
) -> LandmarkClass:
    display = clean_class_name(name)
    names = _clean_names([(language, display), *aliases])
    lat, lon = _location(latitude, longitude)
    _check_free(session, [n for _, n in names], besides=besides)
    landmark = LandmarkClass(
        slug=_unique_slug(session, slugify(display) or "class"),
        display_name=display,
        status=ClassStatus.PROPOSED.value,
        latitude=lat,
        longitude=lon,
    )
    for lang, alias in names:
        _add_alias(landmark, lang, alias)
    session.add(landmark)
    session.flush()
    details: dict[str, Any] = {
        "display_name": display,
        "slug": landmark.slug,
        "aliases": [list(pair) for pair in names],
        "latitude": lat,
        "longitude": lon,
        **(extra or {}),
    }
    _record(session, landmark, ClassChangeKind.PROPOSED, details, who, reason)
    _audit(session, who, "class.propose", landmark, {**details, "reason": reason})
    return landmark


def find_or_propose(
    session: Session, name: str, *, actor: Actor, reason: str = ""
) -> tuple[LandmarkClass, bool]:
    """The living class called ``name``, or a new proposed one: (class, whether it is new).

    For a reviewer who names a class from an image in the queue: a name of a
    retired class makes a new class rather than labelling with the retired one.
    """
    existing = find_class(session, clean_class_name(name))
    if existing is not None and existing.status != ClassStatus.RETIRED.value:
        return existing, False
    return propose_class(session, name, actor=actor, reason=reason), True


def add_alias(
    session: Session,
    class_id: int,
    name: str,
    *,
    language: str | None = None,
    actor: Actor,
    reason: str = "",
) -> ClassAlias:
    """Another name for a living class, in ``language`` (guessed from the script if None)."""
    who, why = _who(actor), _reason(reason)
    landmark = _living(session, class_id)
    cleaned = clean_class_name(name)
    lang = _language(language, cleaned)
    if _has_name(landmark, lang, cleaned):
        raise Conflict(f"{cleaned!r} ({lang}) is already a name of class {_label(landmark)}")
    _check_free(session, [cleaned], besides=[landmark.id])
    _add_alias(landmark, lang, cleaned)
    session.flush()
    details = {"language": lang, "name": cleaned}
    _record(session, landmark, ClassChangeKind.ALIAS_ADDED, details, who, why)
    _audit(session, who, "class.alias", landmark, {**details, "reason": why})
    return landmark.aliases[-1]


def rename(
    session: Session,
    class_id: int,
    new_name: str,
    *,
    language: str | None = None,
    actor: Actor,
    reason: str = "",
) -> LandmarkClass:
    """Give a living class a new display name; the old one stays an alias (still searchable).

    The slug does not change: it identifies the class in exports and URLs.
    """
    who, why = _who(actor), _reason(reason)
    landmark = _living(session, class_id)
    cleaned = clean_class_name(new_name)
    lang = _language(language, cleaned)
    old = landmark.display_name
    if cleaned == old:
        raise RejectedInput(f"class {landmark.slug} is already called {cleaned!r}")
    _check_free(session, [cleaned], besides=[landmark.id])
    added: list[tuple[str, str]] = []
    if not any(a.search_key == search_key(old) for a in landmark.aliases):
        added.append((guess_language(old), old))
    if not any(a.name == cleaned for a in landmark.aliases):
        added.append((lang, cleaned))
    for pair in added:
        _add_alias(landmark, *pair)
    landmark.display_name = cleaned
    session.flush()
    details = {"from": old, "to": cleaned, "aliases_added": [list(p) for p in added]}
    _record(session, landmark, ClassChangeKind.RENAMED, details, who, why)
    _audit(session, who, "class.rename", landmark, {**details, "reason": why})
    return landmark


# --- merging -----------------------------------------------------------------------


def merge(
    session: Session, source_id: int, into_id: int, *, actor: Actor, reason: str = ""
) -> MergeResult:
    """Fold ``source`` into ``into``: its images, its names, its reports; then retire it.

    Every image whose current label is the source gets a new label with the
    target that supersedes it (origin ``class.merge:<source slug>``), so the
    old labels stay in each image's history. The source's names become
    aliases of the target; user reports that claimed the source now claim
    the target (the name they typed is kept). Both classes get a ``merged``
    change. Raises RejectedInput for a merge into itself, NotFound for an
    unknown class, Conflict if either is retired.
    """
    who, why = _who(actor), _reason(reason)
    if source_id == into_id:
        raise RejectedInput("a class cannot be merged into itself")
    # Locked in id order, so two opposite merges of one pair cannot deadlock.
    locked = {class_id: _get(session, class_id) for class_id in sorted((source_id, into_id))}
    source, into = locked[source_id], locked[into_id]
    for landmark in (source, into):
        if landmark.status == ClassStatus.RETIRED.value:
            raise Conflict(f"class {_label(landmark)} is retired")
    session.flush()
    moved = _move_current_labels(
        session, source.id, into.id, origin=f"class.merge:{source.slug}"[:200], author_id=who.id
    )
    claims = session.connection().execute(
        update(ImageSource)
        .where(ImageSource.claimed_class_id == source.id)
        .values(claimed_class_id=into.id)
    )
    added: list[tuple[str, str]] = []
    names = [(a.language, a.name) for a in source.aliases]
    if not any(a.search_key == search_key(source.display_name) for a in source.aliases):
        names.insert(0, (guess_language(source.display_name), source.display_name))
    for lang, name in names:
        if not _has_name(into, lang, name):
            _add_alias(into, lang, name)
            added.append((lang, name))
    source.status = ClassStatus.RETIRED.value
    session.flush()
    claims_moved = int(claims.rowcount or 0)
    common = {
        "labels_moved": moved,
        "claims_moved": claims_moved,
        "aliases_added": [list(p) for p in added],
    }
    _record(
        session,
        source,
        ClassChangeKind.MERGED,
        {"into": into.id, "into_slug": into.slug, **common},
        who,
        why,
    )
    _record(
        session,
        into,
        ClassChangeKind.MERGED,
        {"from": source.id, "from_slug": source.slug, **common},
        who,
        why,
    )
    _audit(session, who, "class.merge", source, {"into": into.id, **common, "reason": why})
    return MergeResult(
        source=source, into=into, labels_moved=moved, claims_moved=claims_moved, aliases_added=added
    )


def _move_current_labels(
    session: Session, source_id: int, into_id: int, *, origin: str, author_id: int | None
) -> int:
    """One INSERT ... SELECT: a superseding label with ``into_id`` for each current one."""
    now = datetime.now(UTC)
    chosen = (
        select(
            Label.image_id,
            literal(LabelVerdict.LANDMARK.value, String),
            literal(into_id, Integer),
            Label.box_x_min,
            Label.box_y_min,
            Label.box_x_max,
            Label.box_y_max,
            # Typed explicitly: PostgreSQL cannot infer the type of a bare NULL.
            cast(literal(author_id, Integer), Integer),
            literal(origin, String),
            Label.id,
            literal(now, DateTime(timezone=True)),
        )
        .where(Label.class_id == source_id, is_current())
        .order_by(Label.id)
    )
    columns = [
        "image_id",
        "verdict",
        "class_id",
        "box_x_min",
        "box_y_min",
        "box_x_max",
        "box_y_max",
        "author_id",
        "origin",
        "supersedes_id",
        "created_at",
    ]
    # preserve_rowcount: without it an INSERT ... SELECT reports -1 on psycopg.
    statement = insert(Label).from_select(columns, chosen)
    result = session.connection().execute(statement.execution_options(preserve_rowcount=True))
    return int(result.rowcount or 0)


# --- splitting ---------------------------------------------------------------------


def split(
    session: Session,
    class_id: int,
    into: Sequence[str],
    *,
    actor: Actor,
    reason: str = "",
    embeddings_dir: Path | None = None,
    seed: int = 0,
) -> SplitResult:
    """Replace a class by two or more new (proposed) ones and send its images back to review.

    The images whose current label is the class go back in line: their queue
    items (created where missing) become pending first reviews, and their
    places under the current ranking come before everything else in line,
    grouped so that similar photos follow one another: k-means (k = number of
    new classes, seeded with ``seed``) over the cached embeddings under
    ``embeddings_dir`` where the images have them, else by near-duplicate
    group. Their labels stay as they are until a reviewer decides. The class
    is retired.
    """
    who, why = _who(actor), _reason(reason)
    original = _living(session, class_id)
    names: list[str] = []
    for raw in into:
        name = clean_class_name(raw)
        if any(search_key(name) == search_key(seen) for seen in names):
            raise RejectedInput(f"the name {name!r} is given twice")
        names.append(name)
    if len(names) < MIN_SPLIT_PARTS:
        raise RejectedInput(f"a split needs at least {MIN_SPLIT_PARTS} new class names")
    # The split class is retired in this same step, so its own names may pass on.
    _check_free(session, names, besides=[original.id])

    source_info = {"id": original.id, "slug": original.slug}
    created = [
        _propose(
            session,
            name,
            who=who,
            reason=why,
            besides=[original.id],
            extra={"split_from": source_info},
        )
        for name in names
    ]
    image_ids, group_ids = _labelled_images(session, original.id)
    order, cluster, grouped_by = _grouping(
        session, image_ids, group_ids, embeddings_dir, k=len(created), seed=seed
    )
    _reopen(session, original.id, image_ids[order])
    original.status = ClassStatus.RETIRED.value
    session.flush()
    sizes = np.bincount(cluster).tolist() if len(cluster) else []
    details = {
        "into": [{"id": c.id, "slug": c.slug, "name": c.display_name} for c in created],
        "images_reopened": len(image_ids),
        "clusters": len(sizes),
        # The sizes of the largest groups only: a split by near-duplicate
        # group can leave thousands of single photos.
        "largest_clusters": sizes[:LARGEST_CLUSTERS_KEPT],
        "grouped_by": grouped_by,
    }
    _record(session, original, ClassChangeKind.SPLIT, details, who, why)
    _audit(session, who, "class.split", original, {**details, "reason": why})
    return SplitResult(
        original=original,
        new_classes=created,
        images_reopened=len(image_ids),
        cluster_sizes=sizes,
        grouped_by=grouped_by,
    )


def _labelled_images(session: Session, class_id: int) -> tuple[IntArray, IntArray]:
    """(image ids, their near-duplicate groups) of the images labelled ``class_id`` now."""
    rows = session.execute(
        select(Label.image_id, Image.group_id)
        .join(Image, Image.id == Label.image_id)
        .where(Label.class_id == class_id, is_current())
        .distinct()
        .order_by(Label.image_id)
    ).all()
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    groups = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
    return ids, groups


def _space(session: Session) -> EmbeddingSpace | None:
    """The champion model's embedding space, else the newest shared one with embeddings."""
    current = champion(session)
    if current is not None:
        return session.get(EmbeddingSpace, current.space_id)
    return embedding_store.newest_shared_space(session, with_rows=True)


def _grouping(
    session: Session,
    image_ids: IntArray,
    group_ids: IntArray,
    embeddings_dir: Path | None,
    *,
    k: int,
    seed: int,
) -> tuple[IntArray, IntArray, str]:
    vectors, has_vector = None, None
    space = _space(session) if embeddings_dir is not None and len(image_ids) else None
    if space is not None and embeddings_dir is not None:
        try:
            found, rows = embedding_store.load(
                session, embeddings_dir, space, image_ids=image_ids.tolist()
            )
        except (OSError, IndexError, ValueError):
            # The cache file is missing or shorter than its index says: it is
            # derived data, so group by near-duplicates instead of failing.
            found, rows = np.zeros(0, dtype=np.int64), None
        if rows is not None and len(found):
            has_vector = np.isin(image_ids, found)
            vectors = rows  # ``found`` is sorted, like image_ids: rows align
    return split_order(group_ids, vectors, has_vector, k=k, seed=seed)


def split_order(
    group_ids: ArrayLike,
    vectors: ArrayLike | None,
    has_vector: ArrayLike | None,
    *,
    k: int,
    seed: int = 0,
) -> tuple[IntArray, IntArray, str]:
    """The order in which to review N images so that similar ones come together.

    Images with an embedding are clustered by k-means (on L2-normalised
    rows; ``KMeans`` up to 10,000 images, ``MiniBatchKMeans`` above, seeded).
    An image without one joins the cluster that most of its near-duplicates
    are in; what is left is grouped by near-duplicate group.

    Parameters
    ----------
    group_ids : (N,) int, the near-duplicate group of each image.
    vectors : (M, D) float, finite: the embeddings of the images that have
        one, in row order; None when no image has one.
    has_vector : (N,) bool with M True entries (which rows ``vectors`` hold),
        or None.
    k : >= 1, clusters for k-means (fewer if M is smaller).
    seed : equal inputs and seed give equal output.

    Returns
    -------
    order : (N,) int64 row indices: each cluster contiguous, larger clusters
        first (ties: the one with the lowest row); within a cluster, the
        embedded rows nearest its centre first, then the others by row.
    cluster : (N,) int64, the cluster of ``order[i]``, numbered 0.. in
        the order they come (non-decreasing).
    grouped_by : "embeddings" when k-means ran, "near_duplicates" when no
        image had an embedding, "none" when N is 0.
    """
    groups = np.asarray(group_ids, dtype=np.int64)
    n_rows = groups.shape[0]
    if n_rows == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), "none"
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    mask = (
        np.zeros(n_rows, dtype=np.bool_)
        if has_vector is None
        else np.asarray(has_vector, dtype=np.bool_)
    )
    raw = np.full(n_rows, -1, dtype=np.int64)
    distance = np.full(n_rows, np.inf, dtype=np.float64)
    grouped_by = "near_duplicates"
    if vectors is not None and mask.any():
        points = normalize_rows(vectors)
        if points.shape[0] != int(mask.sum()):
            raise ValueError(f"vectors has {points.shape[0]} rows, has_vector {int(mask.sum())}")
        labels, centres = _kmeans(points, min(k, points.shape[0]), seed)
        raw[mask] = labels
        distance[mask] = np.linalg.norm(points - centres[labels], axis=1)
        grouped_by = "embeddings"
        _follow_near_duplicates(raw, groups, mask)
    left = raw < 0
    if left.any():
        _, inverse = np.unique(groups[left], return_inverse=True)
        raw[left] = raw.max(initial=-1) + 1 + inverse.astype(np.int64)
    # Number the clusters by size (descending), then by their first row.
    rows = np.arange(n_rows, dtype=np.int64)
    ids, first_row, sizes = np.unique(raw, return_index=True, return_counts=True)
    rank = np.empty(len(ids), dtype=np.int64)
    rank[np.lexsort((first_row, -sizes))] = np.arange(len(ids), dtype=np.int64)
    cluster_of_row = rank[np.searchsorted(ids, raw)]
    order = np.lexsort((rows, distance, cluster_of_row)).astype(np.int64)
    return order, cluster_of_row[order], grouped_by


def _kmeans(
    points: np.ndarray[Any, Any], k: int, seed: int
) -> tuple[IntArray, np.ndarray[Any, Any]]:
    if k == 1:
        return np.zeros(points.shape[0], dtype=np.int64), points.mean(axis=0, keepdims=True)
    # Imported here: scikit-learn takes seconds to import and only a split needs it.
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.exceptions import ConvergenceWarning

    if points.shape[0] <= FULL_KMEANS_MAX_IMAGES:
        clustering = KMeans(n_clusters=k, n_init=KMEANS_RESTARTS, random_state=seed)
    else:
        clustering = MiniBatchKMeans(n_clusters=k, n_init=KMEANS_RESTARTS, random_state=seed)
    with warnings.catch_warnings():
        # Fewer distinct photos than clusters: some clusters stay empty, which is fine here.
        warnings.simplefilter("ignore", ConvergenceWarning)
        labels = np.asarray(clustering.fit_predict(points), dtype=np.int64)
    return labels, np.asarray(clustering.cluster_centers_, dtype=np.float32)


def _follow_near_duplicates(raw: IntArray, groups: IntArray, mask: np.ndarray[Any, Any]) -> None:
    """In place: each row without a cluster takes its near-duplicates' most common one."""
    missing = np.flatnonzero(~mask)
    if len(missing) == 0:
        return
    pairs, counts = np.unique(
        np.stack([groups[mask], raw[mask]], axis=1), axis=0, return_counts=True
    )
    best = pairs[np.lexsort((pairs[:, 1], -counts, pairs[:, 0]))]
    first = np.ones(len(best), dtype=np.bool_)
    first[1:] = best[1:, 0] != best[:-1, 0]
    best_group, best_cluster = best[first, 0], best[first, 1]
    position = np.searchsorted(best_group, groups[missing])
    inside = position < len(best_group)
    hit = np.zeros(len(missing), dtype=np.bool_)
    hit[inside] = best_group[position[inside]] == groups[missing][inside]
    raw[missing[hit]] = best_cluster[position[hit]]


def _reopen(session: Session, class_id: int, ordered_ids: IntArray) -> None:
    """Pending first reviews for ``ordered_ids``, in that order at the head of the line."""
    if len(ordered_ids) == 0:
        return
    now = datetime.now(UTC)
    labelled = select(Label.image_id).where(Label.class_id == class_id, is_current())
    bulk_write.open_items(session, ordered_ids, now)
    session.execute(
        update(QueueItem)
        .where(QueueItem.image_id.in_(labelled))
        .values(
            status=QueueStatus.PENDING.value,
            stage=1,
            claimed_by=None,
            lease_expires_at=None,
            first_decision_id=None,
            first_reviewer_id=None,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    ranking = current_ranking(session)
    top = session.scalar(select(func.max(QueueOrder.priority)).where(QueueOrder.ranking == ranking))
    floor = max(SPLIT_PRIORITY_FLOOR, float(top or 0.0))
    session.execute(
        delete(QueueOrder)
        .where(QueueOrder.ranking == ranking, QueueOrder.image_id.in_(labelled))
        .execution_options(synchronize_session=False)
    )
    n = len(ordered_ids)
    # Strictly falling along the order, all above what was in line before.
    priority = floor + (n - np.arange(n, dtype=np.float64)) / n
    bulk_write.write_ranking(
        session,
        bulk_write.RankingRows(
            ranking=ranking,
            image_ids=np.asarray(ordered_ids, dtype=np.int64),
            priority=priority,
            strategy=np.full(n, CLASS_SPLIT_STRATEGY),
        ),
    )


# --- retiring and activating ---------------------------------------------------------


def retire(session: Session, class_id: int, *, actor: Actor, reason: str = "") -> LandmarkClass:
    """Take a class out of use: it is no longer offered to reviewers. Its labels stay."""
    who, why = _who(actor), _reason(reason)
    landmark = _get(session, class_id)
    if landmark.status == ClassStatus.RETIRED.value:
        raise Conflict(f"class {_label(landmark)} is already retired")
    labelled = int(
        session.scalar(
            select(func.count(func.distinct(Label.image_id))).where(
                Label.class_id == landmark.id, is_current()
            )
        )
        or 0
    )
    details = {"from_status": landmark.status, "labelled_images": labelled}
    landmark.status = ClassStatus.RETIRED.value
    session.flush()
    _record(session, landmark, ClassChangeKind.RETIRED, details, who, why)
    _audit(session, who, "class.retire", landmark, {**details, "reason": why})
    return landmark


def activate_ready(
    session: Session,
    counts: Mapping[int, tuple[int, int]],
    *,
    min_train: int,
    min_test: int,
    actor: Actor,
) -> list[LandmarkClass]:
    """Activate each proposed class with enough reviewed images: ``min_train``, ``min_test``.

    ``counts`` maps a class id to (training images, test images), as the new
    dataset version splits them; a proposed class it leaves out counts (0, 0).
    Returns the classes activated, by id; each gets an ``activated`` change.
    """
    who = _who(actor)
    for label, value in (("min_train", min_train), ("min_test", min_test)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise RejectedInput(f"{label} must be a whole number >= 0, got {value!r}")
    for class_id, pair in counts.items():
        if len(pair) != 2 or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in pair
        ):
            raise RejectedInput(
                f"the counts of class {class_id} must be two whole numbers >= 0, got {pair!r}"
            )
    proposed = session.scalars(
        select(LandmarkClass)
        .where(LandmarkClass.status == ClassStatus.PROPOSED.value)
        .order_by(LandmarkClass.id)
        .with_for_update(key_share=True)
    ).all()
    activated: list[LandmarkClass] = []
    for landmark in proposed:
        train, test = counts.get(landmark.id, (0, 0))
        if train < min_train or test < min_test:
            continue
        landmark.status = ClassStatus.ACTIVE.value
        details = {"train": train, "test": test, "min_train": min_train, "min_test": min_test}
        _record(session, landmark, ClassChangeKind.ACTIVATED, details, who, "")
        _audit(session, who, "class.activate", landmark, details)
        activated.append(landmark)
    session.flush()
    return activated
