"""The interface every image store implements (a local folder now; S3-compatible later)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol


class ImageStore(Protocol):
    def put(self, key: str, data: bytes) -> bool:
        """Store ``data`` under ``key`` atomically. Return True if the key was new."""
        ...

    def get(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove ``key``; removing a missing key is not an error."""
        ...

    def keys(self) -> Iterator[str]: ...

    def age_seconds(self, key: str) -> float:
        """Seconds since ``key`` was written (for collecting orphans safely)."""
        ...


def storage_key(sha256: str, extension: str) -> str:
    """Where an image lives: fanned out by hash, never by a user-supplied name."""
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
    if extension not in ("jpg", "png"):
        raise ValueError(f"unexpected stored extension: {extension!r}")
    return f"{sha256[:2]}/{sha256[2:4]}/{sha256}.{extension}"
