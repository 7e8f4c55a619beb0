"""The one place that masks credentials in text: DSNs, URLs, errors and log lines.

Every message datalogger builds from a connection string or a server's error
passes through :func:`redact`, so a password never reaches a log, an
exception or ``stats()``. :func:`secrets_in` finds the secrets in a table of
options (passwords, tokens, URL and DSN passwords) so that they can be masked
wherever a library echoes them back.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["MASK", "mentions_secret", "redact", "secrets_in"]

#: What a masked secret reads as.
MASK = "***"

_SECRET_KEYS = ("password", "passwd", "secret", "token")
#: ``scheme://user:PASSWORD@host``
_URL_PASSWORD = re.compile(r"(\w[\w+.-]*://[^:/@\s]*:)([^@\s]*)(@)")
#: ``?password=PASSWORD`` or ``&password=PASSWORD`` in a URL's query.
_QUERY_PASSWORD = re.compile(r"([?&]password=)([^&#\s]*)", re.IGNORECASE)
#: ``password=PASSWORD`` or ``password = 'PASS WORD'`` in a libpq key/value string.
#: Not after ``?`` or ``&``: there it is a URL's query parameter, which ends at the next ``&``.
_KV_PASSWORD = re.compile(r"(?<![?&])(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'?|\S+)", re.IGNORECASE)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Mask the passwords in ``text``.

    URL passwords (``scheme://user:***@host``), ``?password=***`` query
    parameters, DSN ``password=***`` pairs (quoted or not) and every string of
    ``secrets`` found in ``text`` are replaced by ``***``.
    """
    for secret in sorted((s for s in secrets if s and s != MASK), key=len, reverse=True):
        text = text.replace(secret, MASK)  # first, whole: a pattern could mask only part of one
    text = _URL_PASSWORD.sub(rf"\1{MASK}\3", text)
    text = _QUERY_PASSWORD.sub(rf"\1{MASK}", text)
    return _KV_PASSWORD.sub(lambda m: m.group(1) + MASK, text)


def secrets_in(options: Mapping[str, Any] | None) -> set[str]:
    """The secret strings found in ``options``: passwords, tokens and URL/DSN passwords."""
    found: set[str] = set()
    if not options:
        return found
    for key, value in options.items():
        if not isinstance(value, str) or not value:
            continue
        if any(word in str(key).lower() for word in _SECRET_KEYS):
            found.add(value)
        found.update(secrets_in_text(value))
    return found


def secrets_in_text(text: str) -> set[str]:
    """Passwords embedded in a URL (``scheme://user:pw@host``) or a libpq DSN (``password=pw``)."""
    found: set[str] = set()
    if "://" in text:
        try:
            password = urlsplit(text).password
        except ValueError:
            password = None
        if password:
            found.update({password, unquote(password)})
    for match in _KV_PASSWORD.finditer(text):
        value = match.group(2)
        if value.startswith("'"):
            value = value[1:-1].replace("\\'", "'")
        if value:
            found.add(value)
    return found


def mentions_secret(exc: BaseException | None, secrets: Iterable[str]) -> bool:
    """True when ``exc``, or an exception it was chained from, mentions one of ``secrets``.

    Use it to decide whether a translated error may keep ``exc`` as its cause.
    """
    wanted = [secret for secret in secrets if secret]
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = f"{exc} {exc.args!r}"
        if any(secret in text for secret in wanted):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
