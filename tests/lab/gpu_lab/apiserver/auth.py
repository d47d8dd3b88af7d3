"""Bearer-token authentication and the lab's two roles: admin and read-only.

RBAC is not modelled beyond that: the admin may do anything, the reader may get, list and
watch. A wrong token is refused with 401 before anything else; no token is
``system:anonymous``, which may only read ``/version`` and the health endpoints.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from .errors import forbidden, qualified, unauthorized

READ_VERBS = frozenset(("get", "list", "watch"))
PUBLIC_PATHS = frozenset(("/version", "/healthz", "/readyz", "/livez"))


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...]
    read_only: bool = False


ADMIN = User("kube:admin", ("system:cluster-admins", "system:authenticated"))
READER = User("lab-reader", ("system:authenticated",), read_only=True)
ANONYMOUS = User("system:anonymous", ("system:unauthenticated",), read_only=True)


def _token() -> str:
    return "sha256~" + secrets.token_urlsafe(32)


class Authenticator:
    def __init__(self, admin_token: str, reader_token: str) -> None:
        self.admin_token = admin_token
        self.reader_token = reader_token

    @classmethod
    def load_or_create(cls, path: Path) -> Authenticator:
        """Tokens persist under the lab's home so kubeconfigs survive restarts."""
        if path.exists():
            data = json.loads(path.read_text())
            return cls(data["admin"], data["reader"])
        auth = cls(_token(), _token())
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"admin": auth.admin_token, "reader": auth.reader_token}, fh)
        return auth

    def authenticate(self, header: str | None) -> User:
        if not header:
            return ANONYMOUS
        scheme, _sep, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise unauthorized()
        token = token.strip()
        if secrets.compare_digest(token, self.admin_token):
            return ADMIN
        if secrets.compare_digest(token, self.reader_token):
            return READER
        raise unauthorized()


def authorize(user: User, verb: str, plural: str, group: str, namespace: str | None,
              name: str | None, subresource: str | None = None) -> None:
    """Raise 403 in the real server's words when ``user`` may not do ``verb``."""
    if user is ADMIN:
        return
    if user is not ANONYMOUS and verb in READ_VERBS:
        return
    resource = f"{plural}/{subresource}" if subresource else plural
    where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
    target = f'{qualified(plural, group)} "{name}"' if name else qualified(plural, group)
    raise forbidden(
        f'{target} is forbidden: User "{user.name}" cannot {verb} resource "{resource}" in API '
        f'group "{group}"{where}',
        plural, group, name or "",
    )


def authorize_path(user: User, path: str) -> None:
    if user is ADMIN or path in PUBLIC_PATHS:
        return
    if user is ANONYMOUS:
        raise forbidden(f'forbidden: User "system:anonymous" cannot get path "{path}"')
