"""Image store on the local disk."""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

_KEY = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{64}\.(jpg|png)$")


class LocalImageStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def path_for(self, key: str) -> Path:
        # Keys are produced by storage_key(); checking the shape here means a
        # key from anywhere else can never address a file outside the store.
        if not _KEY.fullmatch(key):
            raise ValueError(f"invalid storage key: {key!r}")
        return self.root / key

    def put(self, key: str, data: bytes) -> bool:
        target = self.path_for(key)
        if target.exists():
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            # link() fails if another writer won the race; the file it wrote
            # has the same content, so either outcome is correct.
            try:
                os.link(temp_name, target)
                created = True
            except FileExistsError:
                created = False
        finally:
            os.unlink(temp_name)
        return created

    def get(self, key: str) -> bytes:
        return self.path_for(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self.path_for(key).exists()

    def delete(self, key: str) -> None:
        self.path_for(key).unlink(missing_ok=True)

    def keys(self) -> Iterator[str]:
        for path in sorted(self.root.glob("??/??/*")):
            key = path.relative_to(self.root).as_posix()
            if _KEY.fullmatch(key):
                yield key

    def age_seconds(self, key: str) -> float:
        return time.time() - self.path_for(key).stat().st_mtime
