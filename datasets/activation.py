"""The class-activation step a snapshot runs, shared by the CLI and the web page.

A snapshot hands the step its per-class split counts; the step activates
each proposed class with enough training and test images (``curation.classes.
activate_ready``) and returns the slugs it activated, so that the version's
class list already shows them active. Both callers build the step here so a
snapshot is taken the same way whichever door it comes through.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from sqlalchemy.orm import Session

from curation.accounts import Actor
from curation.classes import activate_ready

Activation = Callable[[Session, Mapping[int, Mapping[str, int]]], list[str]]


def class_activation(*, min_train: int, min_test: int, actor: Actor) -> Activation:
    """The ``activate`` callable of :func:`datasets.versions.snapshot`.

    ``actor``: the user (its id goes on the class changes) or a name such as
    ``"cli:alice"``.
    """

    def activate(session: Session, counts: Mapping[int, Mapping[str, int]]) -> list[str]:
        split_counts = {cid: (c["train"], c["test"]) for cid, c in counts.items()}
        activated = activate_ready(
            session, split_counts, min_train=min_train, min_test=min_test, actor=actor
        )
        return [landmark.slug for landmark in activated]

    return activate
