"""Credentials out of anything printed: URLs with ``user:password@`` and secret parameters.

One helper for every place a URL can reach a person: the worker's start-up line,
configuration errors, ``/status``, Alertmanager and ClickHouse errors, and every log
record (``install_log_redaction``). ``redact_url`` keeps what helps find the
service (scheme, user name, host, port, path) and hides what grants access:

    http://tracewatch:s3cret@am.internal:9093    → http://tracewatch:***@am.internal:9093
    https://TOKEN@host/path                       → https://***@host/path
    https://host/x?password=s3cret&db=a           → https://host/x?password=***&db=a

``redact_text`` does the same to every URL inside a longer message (a library's
exception text that echoes the URL it was given). Pure: no I/O.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

__all__ = ["install_log_redaction", "redact_text", "redact_url"]

#: ``scheme://userinfo@``: userinfo is anything up to the first ``@`` before the host's
#: end (``/``, whitespace, a quote) so a password holding ``:`` or ``;`` is covered too
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/\s@'\"<>]*)@")
#: query parameters that carry a secret, wherever they appear
_SECRET_PARAMETER = re.compile(
    r"(?i)(?P<name>[?&;](?:password|passwd|pwd|secret|token|access_token|api_key|apikey|key)=)"
    r"[^&#\s'\"<>]*"
)


def redact_url(url: str) -> str:
    """``url`` without its password (or its lone user part) and secret query parameters."""
    return redact_text(url)


def redact_text(text: str) -> str:
    """Every URL credential in ``text`` replaced by ``***``; other text unchanged."""
    if "@" in text:
        text = _USERINFO.sub(_hide_userinfo, text)
    if "=" in text:
        text = _SECRET_PARAMETER.sub(r"\g<name>***", text)
    return text


def _hide_userinfo(match: re.Match[str]) -> str:
    user, sep, _password = match["userinfo"].partition(":")
    shown = f"{user}:***" if sep and user else "***"
    return f"{match['scheme']}{shown}@"


def install_log_redaction() -> None:
    """Redact every log record made from now on in this process, whatever its handler.

    A record factory rather than a handler filter: faust (and any library) may set up
    its own handlers after ours, and a factory sees every record before any of them.
    The message is rendered once here (records below the level are never made, so
    this costs only what is printed anyway), and so is the traceback, whose exception
    text may echo a URL.
    """
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_tracewatch_redacts", False):
        return
    formatter = logging.Formatter()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        message = record.getMessage()
        redacted = redact_text(message)
        if redacted != message or record.args:
            # (), not None: faust's formatter wraps a non-tuple ``args`` into a tuple and
            # formats again, which breaks on (None,) or on a "%" in the rendered text
            record.msg, record.args = redacted, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = redact_text(formatter.formatException(record.exc_info))
        return record

    marked: Callable[..., logging.LogRecord] = factory
    marked._tracewatch_redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(marked)
