"""Timestamps and identifiers as the API server writes them."""

from __future__ import annotations

import datetime as _dt
import secrets
import uuid

_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def now() -> str:
    """RFC 3339 UTC with second precision, like ``metav1.Time``."""
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse(ts: str) -> _dt.datetime:
    return _dt.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.UTC)


def new_uid() -> str:
    return str(uuid.uuid4())


def random_suffix(length: int = 5) -> str:
    """The random part of ``generateName`` (same alphabet as apimachinery)."""
    return "".join(secrets.choice(_SUFFIX_ALPHABET) for _pos in range(length))
