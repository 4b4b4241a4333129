"""Webhook endpoint URLs: what the config accepts, and what a send checks again."""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator

# http(s)://host..., and nothing http.client refuses in a URL (controls, spaces)
_WEBHOOK_URL = re.compile(r"^https?://[^/?#\x00-\x20\x7f]+[^\x00-\x20\x7f]*$")


def webhook_url_problem(url: str) -> str | None:
    """Why `url` cannot be a webhook endpoint, or None if it can (also checked at send time)."""
    if not _WEBHOOK_URL.match(url):
        return "an http:// or https:// URL with a host (no spaces or control characters)"
    try:  # a bad port, or a host label too long or empty, would fail only when sending
        parts = urlsplit(url)
        host, _port = parts.hostname, parts.port
        if not host:
            return "an http:// or https:// URL with a host"
        host.encode("idna")
    except ValueError as exc:  # UnicodeError is one
        return f"an http:// or https:// URL with a valid host and port ({exc})"
    return None


def _webhook_url(value: str) -> str:
    problem = webhook_url_problem(value)
    if problem is not None:
        raise ValueError(f"{problem}, got {value!r}")
    return value


WebhookUrl = Annotated[str, AfterValidator(_webhook_url)]
