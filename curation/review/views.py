"""What a reviewer sees of an item, the class search, and example photos per class.

Plain data (ids, names, numbers); the web layer adds URLs.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import exists, func, or_, select
from sqlalchemy.orm import Session, aliased

from curation.labels import current_label, is_current
from curation.models import (
    ClassAlias,
    ClassStatus,
    Image,
    ImageScore,
    ImageSource,
    Label,
    LabelVerdict,
    LandmarkClass,
    QueueItem,
    QueueOrder,
    ReviewDecision,
)
from curation.queue import current_ranking, item_reasons, source_dict, with_control_reason
from curation.taxonomy import search_key

NEAR_DUPLICATES_SHOWN = 12


def item_view(session: Session, item: QueueItem) -> dict[str, Any]:
    image = session.get_one(Image, item.image_id)
    ranking = current_ranking(session)
    place = session.get(QueueOrder, (ranking, image.id))
    score = session.get(ImageScore, (ranking, image.id))
    top_ids = list(score.top_classes) if score is not None else []
    classes = {
        c.id: c for c in session.scalars(select(LandmarkClass).where(LandmarkClass.id.in_(top_ids)))
    }
    top_k = [
        {
            "class_id": class_id,
            "slug": classes[class_id].slug if class_id in classes else None,
            "name": classes[class_id].display_name if class_id in classes else f"class {class_id}",
            "probability": round(float(p), 4),
        }
        for class_id, p in zip(top_ids, score.top_probabilities if score else [], strict=False)
    ]
    sources = list(
        session.scalars(
            select(ImageSource).where(ImageSource.image_id == image.id).order_by(ImageSource.id)
        )
    )
    report = next((s for s in sources if s.kind == "report"), None)
    label = current_label(session, image.id)
    label_class = session.get(LandmarkClass, label.class_id) if label and label.class_id else None
    reasons = with_control_reason(
        place.strategy if place else None,
        item_reasons(session, ranking, [image.id]).get(image.id, []),
    )
    first = session.get(ReviewDecision, item.first_decision_id) if item.first_decision_id else None
    first_class = session.get(LandmarkClass, first.class_id) if first and first.class_id else None
    duplicates = session.scalars(
        select(Image.id)
        .where(Image.group_id == image.group_id, Image.id != image.id)
        .order_by(Image.id)
        .limit(NEAR_DUPLICATES_SHOWN)
    ).all()
    return {
        "item_id": item.id,
        "image_id": image.id,
        "width": image.width,
        "height": image.height,
        "status": item.status,
        "lease_expires_at": item.lease_expires_at.isoformat() if item.lease_expires_at else None,
        "stage": item.stage,
        "first_decision": (
            {
                "action": first.action,
                "class_name": first_class.display_name if first_class else None,
            }
            if first
            else None
        ),
        "priority": round(place.priority, 4) if place else None,
        "strategy": place.strategy if place else None,
        "reasons": reasons,
        "top_k": top_k,
        "suggested": (
            {k: top_k[0][k] for k in ("class_id", "name", "probability")} if top_k else None
        ),
        "reporter": (
            {
                "claimed_class_name": report.claimed_class_name,
                "predicted_class_name": report.predicted_class_name,
                "note": report.note,
                "reporter_id": report.reporter_id,
            }
            if report
            else None
        ),
        "sources": [source_dict(s) for s in sources],
        "box": list(label.box) if label and label.box else None,
        "current_label": (
            {
                "class_id": label.class_id,
                "name": label_class.display_name if label_class else None,
                "verdict": label.verdict,
            }
            if label
            else None
        ),
        "near_duplicates": [{"image_id": i} for i in duplicates],
    }


def search_classes(session: Session, query: str, *, limit: int = 20) -> list[dict[str, Any]]:
    """Classes whose name or any alias contains ``query`` once case, accents and
    spacing are folded; names that start with it first. Retired classes are left out."""
    key = search_key(query)
    base = select(LandmarkClass).where(LandmarkClass.status != ClassStatus.RETIRED.value)
    if key:
        alias = aliased(ClassAlias)
        contains = exists().where(
            alias.class_id == LandmarkClass.id, alias.search_key.contains(key)
        )
        prefix = exists().where(
            alias.class_id == LandmarkClass.id, alias.search_key.startswith(key)
        )
        base = base.where(or_(contains, LandmarkClass.slug.contains(key))).order_by(
            (~prefix).asc(), func.lower(LandmarkClass.display_name)
        )
    else:
        base = base.order_by(func.lower(LandmarkClass.display_name))
    found = list(session.scalars(base.limit(max(1, min(limit, 100)))))
    aliases: dict[int, list[dict[str, str]]] = {}
    for a in session.scalars(
        select(ClassAlias).where(ClassAlias.class_id.in_([c.id for c in found]))
    ):
        aliases.setdefault(a.class_id, []).append({"language": a.language, "name": a.name})
    return [
        {
            "id": c.id,
            "slug": c.slug,
            "display_name": c.display_name,
            "status": c.status,
            "aliases": aliases.get(c.id, []),
        }
        for c in found
    ]


def class_examples(session: Session, class_id: int, *, limit: int = 6) -> list[int]:
    """Images whose current label is ``class_id``, most recently labelled first."""
    return list(
        session.scalars(
            select(Label.image_id)
            .where(
                Label.class_id == class_id,
                Label.verdict == LabelVerdict.LANDMARK.value,
                is_current(),
            )
            .order_by(Label.id.desc())
            .limit(max(1, min(limit, 24)))
        )
    )
