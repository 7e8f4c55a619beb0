"""Process-status storage adapters: the registry and the loader.

An adapter is named in the configuration either by a short name of
:data:`ADAPTERS` (``"memory"``, ``"none"``, ``"sqlite"``, ``"postgres"``,
``"redis"``) or as ``"package.module:Class"`` for your own subclass of
:class:`~datalogger.adapters.base.StorageAdapter`. Modules are imported only
when asked for, so psycopg and redis-py stay optional.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

from ..exceptions import ConfigError, DataLoggerError
from ..loading import import_by_path, is_import_path
from .base import REQUIRED_METHODS, StorageAdapter, mentions_secret, redact, secrets_in

__all__ = ["ADAPTERS", "StorageAdapter", "create_adapter", "load_adapter"]

#: Short names of the built-in adapters, as ``"module:Class"``.
ADAPTERS: dict[str, str] = {
    "memory": "datalogger.adapters.memory:MemoryAdapter",
    "none": "datalogger.adapters.none:NoneAdapter",
    "sqlite": "datalogger.adapters.sqlite:SqliteAdapter",
    "postgres": "datalogger.adapters.postgres:PostgresAdapter",
    "redis": "datalogger.adapters.redis:RedisAdapter",
}

#: The pip extra that provides the optional library a built-in adapter needs.
_EXTRAS = {"postgres": "postgres", "redis": "redis"}


def load_adapter(spec: str | type[StorageAdapter]) -> type[StorageAdapter]:
    """Return the adapter class named by ``spec``.

    Args:
        spec: a short name of :data:`ADAPTERS`, ``"package.module:Class"``, or
            an adapter class (returned once checked).

    Raises:
        ConfigError: the name is unknown, cannot be imported, or does not name
            a :class:`StorageAdapter` subclass implementing ``start``,
            ``item_processed``, ``load`` and ``reset``.
    """
    if isinstance(spec, type):
        return _check_class(spec, spec.__qualname__)
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"adapter: expected a name or 'module:Class', got {spec!r}; {_known()}")
    spec = spec.strip()
    target = ADAPTERS.get(spec, spec)
    if not is_import_path(target):
        raise ConfigError(f"adapter: unknown adapter {spec!r}; {_known()}")
    hint = f" (install it with: pip install 'datalogger[{_EXTRAS[spec]}]')" if spec in _EXTRAS else ""
    obj = import_by_path(target, f"adapter {spec!r}", import_hint=hint)
    return _check_class(obj, spec)


def create_adapter(
    spec: str | type[StorageAdapter], options: Mapping[str, Any] | None = None
) -> StorageAdapter:
    """Load the adapter named by ``spec``, build it and :meth:`~StorageAdapter.start` it.

    Passwords found in ``options`` (``password``, DSN and URL passwords) are
    masked in every message; when the original error mentions one, it is not
    kept as the cause.

    Raises:
        ConfigError: the adapter cannot be loaded, or refuses its options.
        DataLoggerError: the adapter failed to start (storage unreachable...).
    """
    cls = load_adapter(spec)
    name = spec if isinstance(spec, str) else cls.__qualname__
    opts: Mapping[str, Any] = {} if options is None else options
    secrets = secrets_in(opts) if isinstance(opts, Mapping) else set()
    try:
        adapter = cls()
    except Exception as exc:
        _reraise(ConfigError, f"adapter {name!r}: cannot be built", exc, secrets)
    try:
        adapter.start(opts)
    except Exception as exc:
        try:
            adapter.close()
        except Exception:  # the start failure is the error to report
            pass
        kind = ConfigError if isinstance(exc, ConfigError) else DataLoggerError
        _reraise(kind, f"adapter {name!r} failed to start", exc, secrets)
    return adapter


def _check_class(obj: Any, spec: str) -> type[StorageAdapter]:
    if not isinstance(obj, type) or not issubclass(obj, StorageAdapter):
        raise ConfigError(
            f"adapter {spec!r}: {obj!r} is not a subclass of "
            "datalogger.adapters.base.StorageAdapter"
        )
    missing = [
        method
        for method in REQUIRED_METHODS
        if getattr(obj, method, None) is getattr(StorageAdapter, method)
        or not callable(getattr(obj, method, None))
    ]
    if missing:
        raise ConfigError(
            f"adapter {spec!r}: {obj.__qualname__} does not implement {', '.join(missing)}"
        )
    return obj


def _reraise(
    kind: type[DataLoggerError], what: str, exc: BaseException, secrets: set[str]
) -> NoReturn:
    """Raise ``kind`` for ``exc`` with secrets masked (and no cause when it mentions one)."""
    detail = str(exc) if isinstance(exc, DataLoggerError) else f"{type(exc).__name__}: {exc}"
    error = kind(f"{what}: {redact(detail, secrets)}")
    if mentions_secret(exc, secrets):
        raise error from None
    raise error from exc


def _known() -> str:
    return f"known adapters: {', '.join(sorted(ADAPTERS))}, or 'package.module:Class'"
