"""The request-log entity: one HTTP request as the analytics middleware records it.

A :class:`RequestLog` never holds a client's raw IP address: ``remote_ip`` is a
salted, keyed BLAKE2b hash (see :func:`hash_ip`), so visitors can be counted
without storing who they are. The salt comes from, in order: the ``ip_salt``
option, the ``DATALOGGER_IP_SALT`` environment variable, or a random salt made
once per process (hashes then differ between processes and restarts).

Device detection (:func:`detect_device`) is a deliberately small rule set on
the ``User-Agent`` header, checked in this order (case-insensitive):

1. ``iPad``, ``Tablet``, ``Kindle``, ``Silk/``, or ``Android`` without
   ``Mobile`` -> ``"tablet"``;
2. ``Mobile``, ``iPhone``, ``iPod``, ``Android`` (with ``Mobile``),
   ``Windows Phone`` -> ``"mobile"``;
3. anything else, including no header -> ``"desktop"``.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

import attrs

__all__ = [
    "DEVICE_TYPES",
    "IP_SALT_ENV",
    "RequestLog",
    "coerce_datetime",
    "detect_device",
    "hash_ip",
    "resolve_salt",
]

#: The values ``RequestLog.device_type`` can take.
DEVICE_TYPES = ("desktop", "mobile", "tablet")
#: Environment variable read for the IP-hashing salt when no salt is given.
IP_SALT_ENV = "DATALOGGER_IP_SALT"

#: Longest stored path / user agent / referer; longer values are cut (they are
#: client-controlled and would otherwise bloat every row).
MAX_TEXT_LENGTH = 2048

_PROCESS_SALT = secrets.token_bytes(32)
_IP_HASH = re.compile(r"^[0-9a-f]{32}$")
_TABLET = re.compile(r"ipad|tablet|kindle|silk/", re.IGNORECASE)
_MOBILE = re.compile(r"mobile|iphone|ipod|windows phone", re.IGNORECASE)
_ANDROID = re.compile(r"android", re.IGNORECASE)


def resolve_salt(salt: str | bytes | None = None) -> bytes:
    """Return the salt to hash IPs with: ``salt``, else ``$DATALOGGER_IP_SALT``, else random.

    An empty salt counts as absent. The random fallback is made once per
    process, so hashes are stable within a process but not across restarts.
    """
    if isinstance(salt, str):
        salt = salt.encode("utf-8")
    if not salt:
        salt = os.environ.get(IP_SALT_ENV, "").encode("utf-8")
    return salt or _PROCESS_SALT


def hash_ip(ip: str, salt: str | bytes) -> str:
    """Hash an IP address with a keyed BLAKE2b (128-bit digest, 32 hex characters).

    Args:
        ip: the address as text, e.g. ``"203.0.113.7"``.
        salt: the secret key; ``str`` is UTF-8 encoded, keys over 64 bytes are
            first reduced with SHA-512.

    Raises:
        ValueError: ``salt`` is empty (an unkeyed hash of an IP is reversible
            by brute force).
    """
    key = salt.encode("utf-8") if isinstance(salt, str) else bytes(salt)
    if not key:
        raise ValueError("hash_ip needs a non-empty salt")
    if len(key) > hashlib.blake2b.MAX_KEY_SIZE:
        key = hashlib.sha512(key).digest()
    return hashlib.blake2b(ip.strip().encode("utf-8"), key=key, digest_size=16).hexdigest()


def detect_device(user_agent: str | None) -> str:
    """Classify a ``User-Agent`` as ``"desktop"``, ``"mobile"`` or ``"tablet"`` (rules above)."""
    if not user_agent:
        return "desktop"
    android = _ANDROID.search(user_agent) is not None
    mobile_word = re.search(r"mobile", user_agent, re.IGNORECASE) is not None
    if _TABLET.search(user_agent) or (android and not mobile_word):
        return "tablet"
    if _MOBILE.search(user_agent) or android:
        return "mobile"
    return "desktop"


def coerce_datetime(value: object) -> datetime:
    """Turn a stored timestamp back into a UTC tz-aware datetime.

    Accepts a datetime (naive ones are taken as UTC), an ISO 8601 string
    (``"2024-05-01T12:00:00+00:00"``, ``"2024-05-01 12:00:00"``, ``...Z``), or
    an epoch number in seconds (int, float, or numeric string).

    Raises:
        ValueError: the value is none of these.
    """
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value), tz=UTC)
    elif isinstance(value, (str, bytes)):
        text = value.decode("utf-8") if isinstance(value, bytes) else value
        text = text.strip()
        try:
            return datetime.fromtimestamp(float(text), tz=UTC)
        except ValueError:
            pass
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            moment = datetime.fromisoformat(text)
        except ValueError as exc:
            raise ValueError(f"not a timestamp: {text[:64]!r}") from exc
    else:
        raise ValueError(f"not a timestamp: {type(value).__name__}")
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _new_request_id() -> str:
    return str(uuid.uuid4())


def _check_ip_hash(_instance: object, _attribute: object, value: str | None) -> None:
    if value is not None and not _IP_HASH.match(value):
        raise ValueError("remote_ip must be a hash from hash_ip(), never a raw address")


def _clip(value: str | None) -> str | None:
    if value is None:
        return None
    return str(value)[:MAX_TEXT_LENGTH]


def _upper(value: object) -> str:
    return str(value).upper()


def _clip_path(value: object) -> str:
    return str(value)[:MAX_TEXT_LENGTH]


def _optional_str(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


@attrs.frozen
class RequestLog:
    """One HTTP request, as stored in the ``requests`` topic.

    Build one from raw request data with :meth:`create` (it hashes the IP and
    detects the device); the constructor takes already-hashed values, as
    :meth:`from_row` does.
    """

    #: Random UUID4 identifying the request.
    request_id: str = attrs.field(validator=attrs.validators.instance_of(str))
    #: HTTP method, upper case (``"GET"``).
    method: str = attrs.field(converter=_upper)
    #: Request path, without the query string.
    path: str = attrs.field(converter=_clip_path)
    #: Response status code (500 when the application raised).
    status_code: int = attrs.field(converter=int)
    #: Time from receiving the request to the end of the response body, in ms.
    duration_ms: float = attrs.field(converter=float)
    #: The ``User-Agent`` header, or None.
    user_agent: str | None = attrs.field(converter=_clip)
    #: Salted hash of the client address (:func:`hash_ip`), never the raw IP.
    remote_ip: str | None = attrs.field(validator=_check_ip_hash)
    #: The ``Referer`` header, or None.
    referer: str | None = attrs.field(converter=_clip)
    #: ``"desktop"``, ``"mobile"`` or ``"tablet"`` (:func:`detect_device`).
    device_type: str = attrs.field(validator=attrs.validators.in_(DEVICE_TYPES))
    #: Random id from the session cookie.
    session_id: str = attrs.field(converter=str)
    #: Number of requests seen in this session so far, this one included.
    session_page_views: int = attrs.field(converter=int)
    #: When the request was recorded (UTC, tz-aware).
    inserted_at: datetime = attrs.field(factory=_utc_now, converter=coerce_datetime)

    @classmethod
    def create(
        cls,
        *,
        method: str,
        path: str,
        status_code: int,
        duration_ms: float,
        session_id: str,
        session_page_views: int,
        user_agent: str | None = None,
        ip: str | None = None,
        salt: str | bytes | None = None,
        referer: str | None = None,
        request_id: str | None = None,
        inserted_at: datetime | None = None,
    ) -> RequestLog:
        """Build a log entry from raw request data.

        Args:
            ip: the client's raw address; only its salted hash is kept.
            salt: the hashing salt; see :func:`resolve_salt` for the fallback.
            request_id: defaults to a fresh UUID4.
            inserted_at: defaults to now (UTC).
        """
        return cls(
            request_id=request_id or _new_request_id(),
            method=method,
            path=path,
            status_code=status_code,
            duration_ms=duration_ms,
            user_agent=_optional_str(user_agent),
            remote_ip=hash_ip(ip, resolve_salt(salt)) if ip else None,
            referer=_optional_str(referer),
            device_type=detect_device(user_agent),
            session_id=session_id,
            session_page_views=session_page_views,
            inserted_at=inserted_at or _utc_now(),
        )

    def to_row(self) -> dict[str, Any]:
        """Return the entry as a row for ``datalogger.log`` (msgpack-serialisable)."""
        return attrs.asdict(self, recurse=False)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> RequestLog:
        """Rebuild an entry from a row read back from a destination.

        Extra columns are ignored; ``inserted_at`` may be a datetime, an ISO
        string or an epoch number (see :func:`coerce_datetime`).

        Raises:
            ValueError: a column is missing or has a value of the wrong kind.
        """
        names = [field.name for field in attrs.fields(cls)]
        missing = [name for name in names if name not in row]
        if missing:
            raise ValueError(f"row lacks RequestLog columns: {', '.join(missing)}")
        values = {name: row[name] for name in names}
        for name in ("user_agent", "remote_ip", "referer"):
            values[name] = _optional_str(values[name])
        try:
            return cls(**values)
        except TypeError as exc:
            raise ValueError(f"row is not a RequestLog: {exc}") from exc
