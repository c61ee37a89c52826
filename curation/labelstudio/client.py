"""The one module that talks to a Label Studio server, through label-studio-sdk.

The sync works against the small :class:`LabelStudioApi` protocol (plain
dicts in and out), so its logic is tested without a server and the SDK's
generated types stay here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from curation.exceptions import ConfigurationError, CurationError
from curation.settings import Settings


class LabelStudioError(CurationError):
    """The Label Studio server refused a request or could not be reached."""


class LabelStudioApi(Protocol):
    def find_project(self, title: str) -> int | None: ...

    def create_project(self, title: str, label_config: str) -> int: ...

    def get_label_config(self, project_id: int) -> str: ...

    def set_label_config(self, project_id: int, label_config: str) -> None: ...

    def import_tasks(self, project_id: int, tasks: Sequence[dict[str, Any]]) -> None: ...

    def tasks(self, project_id: int) -> Iterator[dict[str, Any]]:
        """Every task of the project with ``data``, ``id`` and its ``annotations``."""
        ...

    def task(self, task_id: int) -> dict[str, Any]:
        """One task with its ``project`` and ``annotations``."""
        ...

    def user_names(self) -> dict[int, str]:
        """Label Studio user id to e-mail."""
        ...

    def ensure_webhook(self, project_id: int, url: str, headers: dict[str, str]) -> None: ...


def _plain(item: Any) -> dict[str, Any]:
    if isinstance(item, dict):
        return item
    dumped: dict[str, Any] = item.model_dump(mode="json", by_alias=True)
    return dumped


class SdkApi:
    """:class:`LabelStudioApi` over ``label_studio_sdk.LabelStudio``."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 60.0) -> None:
        # Imported here: the SDK is heavy, and only the sync needs it.
        from label_studio_sdk import LabelStudio  # type: ignore[import-not-found, unused-ignore]

        self._client = LabelStudio(  # type: ignore[no-untyped-call, unused-ignore]
            base_url=base_url, api_key=api_key, timeout=timeout
        )

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CurationError:
            raise
        except Exception as error:  # the SDK raises ApiError, httpx errors, ...
            raise LabelStudioError(f"Label Studio: {what} failed: {error}") from error

    def find_project(self, title: str) -> int | None:
        projects = self._call("listing projects", self._client.projects.list, title=title)
        for project in projects:
            data = _plain(project)
            if data.get("title") == title:
                return int(data["id"])
        return None

    def create_project(self, title: str, label_config: str) -> int:
        project = self._call(
            "creating the project",
            self._client.projects.create,
            title=title,
            label_config=label_config,
            description="Landmark photos sent by the curation platform's queue.",
        )
        return int(_plain(project)["id"])

    def get_label_config(self, project_id: int) -> str:
        project = self._call("reading the project", self._client.projects.get, id=project_id)
        return str(_plain(project).get("label_config") or "")

    def set_label_config(self, project_id: int, label_config: str) -> None:
        self._call(
            "updating the labelling config",
            self._client.projects.update,
            id=project_id,
            label_config=label_config,
        )

    def import_tasks(self, project_id: int, tasks: Sequence[dict[str, Any]]) -> None:
        self._call(
            "importing tasks",
            self._client.projects.import_tasks,
            id=project_id,
            request=list(tasks),
            commit_to_project=True,
        )

    def tasks(self, project_id: int) -> Iterator[dict[str, Any]]:
        pager = self._call(
            "listing tasks",
            self._client.tasks.list,
            project=project_id,
            fields="all",
            page_size=100,
        )
        try:
            for task in pager:
                yield _plain(task)
        except CurationError:
            raise
        except Exception as error:
            raise LabelStudioError(f"Label Studio: listing tasks failed: {error}") from error

    def task(self, task_id: int) -> dict[str, Any]:
        task = _plain(self._call("reading a task", self._client.tasks.get, id=str(task_id)))
        if "annotations" not in task:
            annotations = self._call(
                "reading annotations", self._client.annotations.list, id=task_id
            )
            task["annotations"] = [_plain(a) for a in annotations]
        return task

    def user_names(self) -> dict[int, str]:
        users = self._call("listing users", self._client.users.list)
        names: dict[int, str] = {}
        for user in users:
            data = _plain(user)
            if data.get("id") is not None:
                names[int(data["id"])] = str(data.get("email") or f"user {data['id']}")
        return names

    def ensure_webhook(self, project_id: int, url: str, headers: dict[str, str]) -> None:
        for hook in self._call("listing webhooks", self._client.webhooks.list, project=project_id):
            if _plain(hook).get("url") == url:
                return
        self._call(
            "creating the webhook",
            self._client.webhooks.create,
            url=url,
            project=project_id,
            headers=headers,
            send_payload=True,
            send_for_all_actions=False,
            actions=["ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED"],
        )


def connect(settings: Settings) -> SdkApi:
    """The API of the server the settings name; ConfigurationError where none is set."""
    if not settings.labelstudio_url or not settings.labelstudio_token:
        raise ConfigurationError(
            "set CURATION_LABELSTUDIO_URL and CURATION_LABELSTUDIO_TOKEN to use Label Studio"
        )
    return SdkApi(settings.labelstudio_url, settings.labelstudio_token)
