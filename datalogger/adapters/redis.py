"""A process-status adapter storing the status in one Redis hash (redis-py).

Options:

``url`` (default ``"redis://127.0.0.1:6379/0"``)
    The server, as ``redis://[[user]:password@]host:port/db`` (or ``rediss://``,
    ``unix://``).
``key`` (default ``"datalogger:process_status"``)
    The hash holding ``entity -> timestamp``.
``socket_timeout`` (default ``5.0``)
    Seconds allowed to connect and for each command.

redis-py reconnects by itself when a connection breaks. Passwords in ``url``
never appear in messages or in the ``repr``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NoReturn, TypeVar

import redis

from ..exceptions import ConfigError, DataLoggerError
from .base import (
    Item,
    StorageAdapter,
    check_options,
    mentions_secret,
    redact,
    secrets_in,
    validate_item,
)

__all__ = ["DEFAULT_KEY", "DEFAULT_URL", "RedisAdapter"]

#: The server used when the ``url`` option is not given.
DEFAULT_URL = "redis://127.0.0.1:6379/0"
#: The hash used when the ``key`` option is not given.
DEFAULT_KEY = "datalogger:process_status"

_OPTIONS = ("url", "key", "socket_timeout")
_T = TypeVar("_T")


class RedisAdapter(StorageAdapter):
    """Keeps ``entity -> timestamp`` in one Redis hash."""

    def __init__(self) -> None:
        self.key = DEFAULT_KEY
        self._where = "unconfigured"
        self._secrets: set[str] = set()
        self._client: redis.Redis | None = None

    def start(self, options: Mapping[str, Any]) -> None:
        """Connect and check the server answers; see the module docstring for options.

        Raises:
            ConfigError: a bad option.
            DataLoggerError: the server cannot be reached or refuses the login.
        """
        opts = check_options(options, _OPTIONS, "redis adapter")
        self._secrets = secrets_in(opts)
        url = opts.get("url", DEFAULT_URL)
        key = opts.get("key", DEFAULT_KEY)
        timeout = opts.get("socket_timeout", 5.0)
        if not isinstance(url, str) or not url:
            raise ConfigError("redis adapter: option 'url' must be a non-empty string")
        if not isinstance(key, str) or not key:
            raise ConfigError(f"redis adapter: option 'key' must be a non-empty str, got {key!r}")
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
            raise ConfigError(
                f"redis adapter: option 'socket_timeout' must be > 0, got {timeout!r}"
            )
        self.close()
        self.key = key
        self._where = redact(url, self._secrets)
        try:
            self._client = redis.Redis.from_url(
                url,
                socket_timeout=float(timeout),
                socket_connect_timeout=float(timeout),
                decode_responses=True,
            )
        except (ValueError, redis.RedisError) as exc:
            self._raise(ConfigError, "invalid option 'url'", exc)
        self._run("cannot connect", lambda client: client.ping())

    def item_processed(self, item: Item) -> None:
        """Set the item's timestamp for its entity (the given value is stored as is)."""
        entity, timestamp = validate_item(item)
        self._run("cannot write", lambda client: client.hset(self.key, entity, timestamp))

    def item_processed_many(self, items: Iterable[Item]) -> None:
        """Set several items with one ``HSET`` (for equal entities the last one wins)."""
        latest: dict[str, int] = dict(validate_item(item) for item in items)
        if latest:
            mapping: Any = latest
            self._run("cannot write", lambda client: client.hset(self.key, mapping=mapping))

    def load(self) -> list[Item]:
        """Every stored item, sorted by entity.

        Raises:
            DataLoggerError: the server fails, or a value in the hash is not an integer.
        """
        stored = self._run("cannot read", lambda client: client.hgetall(self.key))
        items: list[Item] = []
        for entity, value in sorted((str(e), v) for e, v in stored.items()):
            try:
                items.append((entity, int(value)))
            except ValueError as exc:
                raise DataLoggerError(
                    f"redis adapter ({self._where}): key {self.key!r}: "
                    f"the timestamp of {entity!r} is not an integer: {value!r}"
                ) from exc
        return items

    def reset(self) -> None:
        """Delete the hash."""
        self._run("cannot reset", lambda client: client.delete(self.key))

    def close(self) -> None:
        """Close the connection pool (safe to call more than once)."""
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except redis.RedisError:
                pass

    def _run(self, what: str, command: Callable[[redis.Redis], _T]) -> _T:
        if self._client is None:
            raise DataLoggerError("redis adapter: not started, or already closed")
        try:
            return command(self._client)
        except redis.RedisError as exc:
            self._raise(DataLoggerError, what, exc)

    def _raise(self, kind: type[DataLoggerError], what: str, exc: BaseException) -> NoReturn:
        """Raise ``kind`` for ``exc`` with passwords masked; drop the cause if it holds one."""
        text = redact(f"{type(exc).__name__}: {exc}", self._secrets)
        error = kind(f"redis adapter ({self._where}, key {self.key!r}): {what}: {text}")
        if mentions_secret(exc, self._secrets):
            raise error from None
        raise error from exc

    def __repr__(self) -> str:
        """``RedisAdapter(url, key=...)``, without the password."""
        return f"RedisAdapter({self._where}, key={self.key!r})"
