"""Signed, expiring image URLs: Label Studio loads images without a session.

The signature is an HMAC-SHA256, under the app's secret key, of the image id
and the expiry time; a URL whose time has passed, or whose id, expiry or
signature was changed, is refused. No file path ever leaves the platform.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlencode

_PURPOSE = b"labelstudio-image"


def signature(secret_key: str, image_id: int, expires: int) -> str:
    message = b"%s:%d:%d" % (_PURPOSE, image_id, expires)
    return hmac.new(secret_key.encode(), message, hashlib.sha256).hexdigest()


def signed_image_path(secret_key: str, image_id: int, expires: int) -> str:
    """The path and query of the image's URL (join it to the public base URL)."""
    query = urlencode({"expires": expires, "sig": signature(secret_key, image_id, expires)})
    return f"/integrations/labelstudio/images/{image_id}?{query}"


def signed_image_url(public_url: str, secret_key: str, image_id: int, expires: int) -> str:
    return public_url.rstrip("/") + signed_image_path(secret_key, image_id, expires)


def verify(
    secret_key: str, image_id: int, expires: str | None, sig: str | None, *, now: float
) -> bool:
    """Whether the URL's signature is right and its expiry (Unix seconds) is still ahead."""
    if not expires or not sig or not expires.isdigit():
        return False
    expiry = int(expires)
    if expiry < now:
        return False
    return hmac.compare_digest(signature(secret_key, image_id, expiry), sig)


def verify_secret(expected: str | None, sent: str | None) -> bool:
    """Whether a webhook carries the shared secret (constant time; never with none set)."""
    if not expected or not sent:
        return False
    return hmac.compare_digest(expected.encode(), sent.encode())
