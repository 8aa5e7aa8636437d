"""The worker's web token: the one credential its HTTP views accept.

The worker makes a random token at each start (or takes ``TRACEWATCH_WORKER_TOKEN``)
and writes it to ``$TRACEWATCH_HOME/worker.token``, readable by the user who
started it and nobody else. The CLI reads it from there and sends
``Authorization: Bearer <token>``; so does the dashboard in a browser, which gets
it in the URL fragment of ``tracewatch dashboard-url`` (a fragment is never sent
to a server). Any other local user, process or web page has no way to learn it.

No faust, no Kafka: the CLI imports this on every command.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from pydantic import SecretStr

__all__ = [
    "TOKEN_FILE",
    "authorization_header",
    "new_token",
    "read_token",
    "remove_token_file",
    "resolve_token",
    "token_path",
    "write_token_file",
]

#: the token's file name under ``$TRACEWATCH_HOME``
TOKEN_FILE = "worker.token"


def new_token() -> str:
    """256 random bits, URL-safe (it travels in a URL fragment to the dashboard)."""
    return secrets.token_urlsafe(32)


def token_path(home: Path) -> Path:
    return home / TOKEN_FILE


def write_token_file(home: Path, token: str) -> Path:
    """Write ``token`` to ``home/worker.token`` with mode 0600 from its first byte.

    The file is created under a fresh random name with ``O_EXCL`` and mode 0600 (no
    window in which another user could open it, whatever the umask), then renamed
    over the old file; a symlink planted at the final name is replaced, not followed.
    """
    home.mkdir(parents=True, exist_ok=True)
    path = token_path(home)
    temporary = home / f".{TOKEN_FILE}.{secrets.token_hex(8)}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            os.fchmod(out.fileno(), 0o600)  # the umask can only take bits away; make sure
            out.write(token + "\n")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def read_token(home: Path) -> str | None:
    """The token of the worker that owns ``home``, or None when there is no token file.

    A file this user may not read raises ``PermissionError``: the worker belongs to
    someone else, and the caller says so.
    """
    try:
        text = token_path(home).read_text()
    except FileNotFoundError:
        return None
    return text.strip() or None


def remove_token_file(home: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        token_path(home).unlink()


def resolve_token(home: Path, setting: SecretStr | None) -> str | None:
    """What a client sends: ``TRACEWATCH_WORKER_TOKEN`` when set, else the token file."""
    if setting is not None and setting.get_secret_value():
        return setting.get_secret_value()
    return read_token(home)


def authorization_header(token: str | None) -> dict[str, str]:
    """``{"Authorization": "Bearer …"}``, or nothing without a token."""
    return {} if token is None else {"Authorization": f"Bearer {token}"}
