"""Configuration: parsing, validation and defaults.

A configuration is a dict, or the path of a TOML file holding the same
structure::

    data_dir = ".datalogger"

    [destinations.db]
    type = "sqlite"
    path = "data.db"

    [destinations.files]
    type = "jsonl"
    directory = "out"
    send_async = true

Every key a destination table holds is either one of the framework options in
:data:`DESTINATION_OPTIONS` or a keyword argument of the destination class. An
unknown key, an unknown type or a missing required argument is named in the
:class:`~datalogger.exceptions.ConfigError` raised by :func:`load_config`.
"""

from __future__ import annotations

import inspect
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from .exceptions import ConfigError
from .loading import import_by_path, is_import_path
from .validation import TOPIC_PATTERN

__all__ = [
    "DESTINATION_OPTIONS",
    "DESTINATION_TYPES",
    "TOP_LEVEL_OPTIONS",
    "BufferSettings",
    "ClusterSettings",
    "Config",
    "DashboardSettings",
    "DestinationSpec",
    "ProcessStatusSettings",
    "RetrySettings",
    "SecuritySettings",
    "WalSettings",
    "default_of",
    "load_config",
    "resolve_class",
]

#: Short names for the built-in destinations.
DESTINATION_TYPES: dict[str, str] = {
    "sqlite": "datalogger.destinations.sqlite:SqliteDestination",
    "jsonl": "datalogger.destinations.jsonl:JsonlDestination",
    "console": "datalogger.destinations.console:ConsoleDestination",
    "memory": "datalogger.testing:CapturingDestination",
    "postgres": "datalogger.destinations.postgres:PostgresDestination",
    "influxdb": "datalogger.destinations.influxdb:InfluxDBDestination",
}

#: Top-level options: name -> description (defaults: the fields of :class:`Config`).
_TOP_LEVEL_DOCS: dict[str, str] = {
    "data_dir": "Directory for dead letters, the write-ahead log and the node's secret (`secret`).",
    "log_timeout": "Seconds `log()` waits for the node to accept a chunk.",
    "connect_timeout": (
        "Seconds a handle's call may take to get a message to the node; a blocking call raises "
        "`NotRunning` when the node cannot be reached within it."
    ),
    "client_buffer_rows": (
        "Rows `log_nowait()`, `broadcast()`, the middleware and the logging handler keep in the "
        "application's memory while the node is away (and events, separately); beyond them rows go to "
        "`spool_dir`, or are dropped and counted."
    ),
    "spool_dir": (
        "Directory where a handle keeps on disk the rows it could not send yet; they survive a restart of"
        " the application and are sent, in order, when the node is back."
    ),
    "spool_max_bytes": (
        "Most bytes one process keeps in `spool_dir`; beyond them (or on a full disk) rows wait in "
        "memory, then are dropped and counted."
    ),
    "shutdown_timeout": (
        "Seconds shutdown waits for buffers to be delivered; what is left stays in the write-ahead log "
        "for the next start."
    ),
    "max_topic_supervisors": (
        "Most TopicSupervisors (each with a worker process per destination) the node runs, besides those "
        "of `isolate`d topics. The first topics get one each, as many as this minus the shared pool (a "
        "quarter of it, at least 1); further topics share the pool, placed by a stable hash of their "
        "name. See docs/concepts.md for what a shared topic keeps."
    ),
    "isolate": (
        "Topics that always get a TopicSupervisor of their own: names, or prefixes ending in `*` "
        '(`"billing.*"`).'
    ),
    "idle_after": (
        "Seconds after which a topic with nothing unsettled and no new chunk releases its state and open "
        "files (a dedicated TopicSupervisor left with no topic exits, its processes with it); it comes "
        "back on its next chunk with its log and watermarks. 0 keeps topics forever."
    ),
    "destinations": "Required. Table of destinations, keyed by a name of your choice.",
    "health_failing_after": "Seconds a destination may keep failing before `datalogger health` reports it.",
    "wal": "Write-ahead log table; see `WalSettings`.",
    "cluster": "Distributed-mode table; see `ClusterSettings`.",
    "process_status": "Process-status storage table; see `ProcessStatusSettings`.",
    "dashboard": "Web dashboard table (`datalogger dashboard`); see `DashboardSettings`.",
    "security": "Signed frames and secret files; see `SecuritySettings` and docs/security.md.",
}

#: Framework options every destination table may hold: name -> description
#: (defaults: :class:`DestinationSpec`).
_DESTINATION_DOCS: dict[str, str] = {
    "type": "Short name of a built-in destination, or `package.module:Class`. Required.",
    "prefix": "Only topics starting with this prefix go to this destination.",
    "send_async": "Send every chunk from its own short-lived `SendActor`.",
    "max_in_flight": "With `send_async`, how many `SendActor`s may run at once.",
    "retry": "Retry policy table; see `RetrySettings`.",
    "buffer": "Batching table (`max_size`, `interval`, `jitter`); none means send chunks as they come.",
    "max_buffered_rows": (
        "Rows held in memory for this destination before `overflow` applies (about 0.75 KB a row while a "
        "backlog lasts). A chunk is never split: one larger than this is taken whole when nothing else is"
        " held. The default holds a bulk load of 200,000 rows into a server that keeps up without reading"
        " any back from the write-ahead log."
    ),
    "overflow": (
        "`spill`: rows over `max_buffered_rows` stay only in the write-ahead log (which holds every row "
        "anyway) and are read back from it, in order, when there is room; `block` the caller; or "
        "`drop_oldest` (counted)."
    ),
    "block_timeout": 'With `overflow = "block"`, seconds `log()` waits before raising `Backpressure`.',
    "requires": "Capabilities a node must have to run this destination's workers (distributed mode).",
    "linger": (
        "Seconds after one hand-over to this destination's worker before the next; chunks logged "
        "meanwhile go as one group. The first chunk after a quiet spell, a group of 10,000 rows or of "
        "half `max_buffered_rows`, and `flush()` go at once; 0 hands every chunk over at once."
    ),
}

OVERFLOW_POLICIES = ("spill", "block", "drop_oldest")
#: The analytics windows the dashboard offers (``datalogger analytics --since`` values, and ``all``).
DASHBOARD_WINDOWS = ("5m", "15m", "1h", "6h", "1d", "1w", "all")
FSYNC_POLICIES = ("always", "interval", "never")


@attrs.frozen
class RetrySettings:
    """How a failed chunk is retried before it is dead-lettered.

    The delay before attempt ``n + 1`` is
    ``min(max_delay, initial_delay * multiplier ** (n - 1)) + random(0, jitter)``.
    Any tenacity ``stop``, ``wait`` or ``retry`` object given from Python replaces
    the one built from these numbers.
    """

    max_attempts: int = 5
    """Attempts in all, the first included."""
    initial_delay: float = 0.5
    """Seconds before the second attempt."""
    max_delay: float = 30.0
    """Upper bound of the delay between attempts."""
    multiplier: float = 2.0
    """Growth of the delay from one attempt to the next."""
    jitter: float = 0.1
    """Up to this many random seconds added to each delay."""
    stop: Any = None
    """A tenacity stop object (``tenacity.stop_after_delay(60)``) replacing ``max_attempts``."""
    wait: Any = None
    """A tenacity wait object replacing the exponential backoff."""
    retry: Any = None
    """A tenacity retry predicate deciding which exceptions are retried."""


@attrs.frozen
class BufferSettings:
    """Batching of a destination's chunks before they are sent."""

    max_size: int = 1000
    """Rows that make the buffer flush at once."""
    interval: float = 1.0
    """Seconds from the first buffered row to the flush."""
    jitter: float = 0.0
    """Up to this many random seconds added to ``interval``, to spread flushes."""


@attrs.frozen
class WalSettings:
    """The per-topic write-ahead log every accepted chunk is written to before ``log()`` returns."""

    fsync: str = "interval"
    """``always`` (fsync before ``log()`` returns, grouped over concurrent callers),
    ``interval`` (fsync at most every ``fsync_interval`` seconds) or ``never``."""
    fsync_interval: float = 0.2
    """Seconds between fsyncs with ``fsync = "interval"``."""
    segment_bytes: int = 16 * 1024 * 1024
    """Size at which a new segment file is started; delivered segments are deleted."""


@attrs.frozen
class ProcessStatusSettings:
    """Where the ProcessStatus actor keeps, per ``<topic>/<destination>``, the last chunk delivered."""

    adapter: str = "sqlite"
    """``memory``, ``none``, ``sqlite``, ``postgres``, ``redis`` or ``package.module:Class``."""
    options: Mapping[str, Any] = attrs.field(factory=dict, repr=False)
    """Options for the adapter; ``sqlite`` defaults ``path`` to ``<data_dir>/process_status.db``.
    Not in the repr: they may hold passwords."""


@attrs.frozen
class ClusterSettings:
    """Several nodes joined in a Thespian convention (see docs/distributed.md)."""

    allowed_members: tuple[str, ...] = ()
    """Addresses (``host`` or ``host:port``) or networks (``10.0.0.0/24``) allowed to join this
    node's convention when it leads. Empty: the networks of the leader's bind address
    (``10.8.0.0/24`` for ``--bind 10.8.0.1`` on a /24; ``127.0.0.0/8`` on loopback) and
    127.0.0.1. The leader itself is always admitted."""
    heartbeat_interval: float = 1.0
    """Seconds between a node's heartbeats to the leader."""
    heartbeat_timeout: float = 3.0
    """Seconds without a heartbeat after which a member counts as gone."""


@attrs.frozen
class DashboardSettings:
    """The web dashboard (``datalogger dashboard``, ``datalogger.dashboard.app``); see docs/dashboard.md."""

    port: int = 8050
    """TCP port ``datalogger dashboard`` serves on (``--port`` wins); 0 picks a free one."""
    bind: str = "127.0.0.1"
    """Address ``datalogger dashboard`` listens on (``--bind`` wins). The page shows paths,
    referers and errors to anyone who reaches it: keep it on loopback."""
    window: str = "1h"
    """The analytics window the page opens with: ``5m``, ``15m``, ``1h``, ``6h``, ``1d``,
    ``1w`` (as ``datalogger analytics --since``) or ``all``."""
    topic: str = "requests"
    """The topic the analytics middleware logs requests to and broadcasts them on."""
    history: str | None = None
    """The SQLite or PostgreSQL destination whose ``topic`` table holds past requests;
    none: the first such destination that takes ``topic``."""
    refresh: float = 1.0
    """Seconds between two pushes of fresh numbers to the browser."""
    history_refresh: float = 60.0
    """Seconds between two reads of the history table (live requests come from pubsub in
    between; the read fills in what pubsub dropped or other nodes saw)."""
    max_rows: int = 100_000
    """Most requests held in memory for the page; beyond it the oldest are left out and
    the page says so."""


@attrs.frozen
class SecuritySettings:
    """Signed frames between a node's processes, its members and its clients (see docs/security.md)."""

    sign: bool = True
    """Sign every Thespian frame with HMAC-SHA256 and drop, unread, any frame that fails. ``false``
    is unsafe: anyone who can reach a port of the node runs code as its user; the node warns at start."""
    secret_file: str | None = None
    """The secret's file (64+ hexadecimal digits, mode 0600 or 0640). Unset: ``DATALOGGER_SECRET_FILE``,
    else ``<data_dir>/secret``, created at first start. Members of a convention share one secret."""
    previous_secret_file: str | None = None
    """While rotating: the old secret. For the first half of ``previous_secret_grace`` frames are
    still signed with it, for the whole grace it is accepted, then refused."""
    previous_secret_grace: float = 3600.0
    """Seconds a rotation lasts, counted from the modification time of ``secret_file`` (the new
    secret): restart every node and client with both files within half of it."""
    allowed_modules: tuple[str, ...] = ()
    """Modules whose classes frames may carry, beyond datalogger's, Thespian's and plain data
    (your message or event classes sent through ``ActorSystem().tell``)."""
    max_frame_bytes: int = 256 * 1024 * 1024
    """Largest frame accepted; a peer announcing a larger one is cut off before it is read."""


@attrs.frozen
class DestinationSpec:
    """One configured destination, validated."""

    name: str
    """The key of the destination's table."""
    type: str
    """The class, as ``package.module:Class``."""
    options: Mapping[str, Any] = attrs.field(repr=False)
    """Keyword arguments for the class (not in the repr: they may hold passwords)."""
    prefix: str | None = None
    send_async: bool = False
    max_in_flight: int = 4
    retry: RetrySettings = RetrySettings()
    buffer: BufferSettings | None = None
    max_buffered_rows: int = 200_000
    overflow: str = "spill"
    block_timeout: float = 10.0
    requires: tuple[str, ...] = ()
    linger: float = 0.2
    """Seconds after one hand-over to the worker before the next, while chunks merge."""
    rows_only: bool = True
    """The class stores rows (dicts) only: its ``takes_any_data`` is false."""
    log_time: tuple[str, str] | None = None
    """The row key the class wants filled with the time of ``log()``, and its unit."""

    def takes(self, topic: str, any_prefix: bool) -> bool:
        """True when this destination receives ``topic``."""
        if not any_prefix or self.prefix is None:
            return True
        return topic.startswith(self.prefix)


@attrs.frozen
class Config:
    """A whole validated configuration."""

    destinations: tuple[DestinationSpec, ...]
    data_dir: str = ".datalogger"
    log_timeout: float = 30.0
    shutdown_timeout: float = 10.0
    connect_timeout: float = 2.0
    client_buffer_rows: int = 100_000
    spool_dir: str | None = None
    spool_max_bytes: int = 1 << 30
    wal: WalSettings = WalSettings()
    process_status: ProcessStatusSettings = ProcessStatusSettings()
    health_failing_after: float = 60.0
    cluster: ClusterSettings = ClusterSettings()
    dashboard: DashboardSettings = DashboardSettings()
    security: SecuritySettings = SecuritySettings()
    max_topic_supervisors: int = attrs.field(
        factory=lambda: default_max_topic_supervisors(), metadata={"shown": "2 x cores (at least 4)"}
    )
    isolate: tuple[str, ...] = ()
    idle_after: float = 600.0

    @property
    def shared_topic_supervisors(self) -> int:
        """Size of the pool of supervisors shared by the topics beyond the dedicated ones."""
        return max(1, self.max_topic_supervisors // 4)

    @property
    def dedicated_topic_supervisors(self) -> int:
        """Topics that get a supervisor of their own before the shared pool is used."""
        return max(0, self.max_topic_supervisors - self.shared_topic_supervisors)

    def isolated(self, topic: str) -> bool:
        """True when ``isolate`` names ``topic`` (or a prefix ``...*`` of it)."""
        for entry in self.isolate:
            if entry.endswith("*") and topic.startswith(entry[:-1]):
                return True
            if entry == topic:
                return True
        return False

    def destinations_for(self, topic: str) -> tuple[DestinationSpec, ...]:
        """The destinations that take ``topic``, honouring prefixes."""
        any_prefix = any(d.prefix is not None for d in self.destinations)
        return tuple(d for d in self.destinations if d.takes(topic, any_prefix))

    def rows_only(self, topic: str) -> bool:
        """True when a destination of ``topic`` stores rows (dicts) only."""
        return any(spec.rows_only for spec in self.destinations_for(topic))


def default_of(cls: type, name: str) -> Any:
    """The default of the attrs field ``name`` of ``cls``: the one place config defaults are written.

    Raises:
        KeyError: ``cls`` has no such field, or it has no default.
    """
    default: Any = attrs.fields_dict(cls)[name].default
    if default is attrs.NOTHING:
        raise KeyError(f"{cls.__name__}.{name} has no default")
    factory = getattr(default, "factory", None) if isinstance(default, attrs.Factory) else None  # type: ignore[arg-type]
    return factory() if factory is not None else default


def _shown_defaults(cls: type, docs: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    """``name -> (default as written in a config file, description)`` for the options of ``docs``."""
    fields = attrs.fields_dict(cls)
    shown: dict[str, tuple[Any, str]] = {}
    for name, description in docs.items():
        field = fields[name]
        if "shown" in field.metadata:
            default: Any = field.metadata["shown"]
        elif field.default is attrs.NOTHING:  # required: a table, or a type name
            default = {} if name == "destinations" else None
        else:
            default = default_of(cls, name)
            if attrs.has(type(default)):
                default = {}  # a settings table: every field at its own default
            elif isinstance(default, tuple):
                default = list(default)
        shown[name] = (default, description)
    return shown


#: Top-level options: name -> (default, description); the defaults are :class:`Config`'s.
TOP_LEVEL_OPTIONS: dict[str, tuple[Any, str]] = _shown_defaults(Config, _TOP_LEVEL_DOCS)
#: Framework options of a destination table: name -> (default, description); the defaults are
#: :class:`DestinationSpec`'s.
DESTINATION_OPTIONS: dict[str, tuple[Any, str]] = _shown_defaults(DestinationSpec, _DESTINATION_DOCS)


def resolve_class(type_name: str) -> type:
    """Import the class named by a short type name or ``package.module:Class``."""
    path = DESTINATION_TYPES.get(type_name, type_name)
    if not is_import_path(path):
        raise ConfigError(
            f"unknown destination type {type_name!r}: use one of "
            f"{', '.join(sorted(DESTINATION_TYPES))} or 'package.module:Class'"
        )
    cls = import_by_path(path, f"destination type {type_name!r}")
    if not isinstance(cls, type):
        raise ConfigError(f"destination type {type_name!r}: {path} is not a class")
    if not callable(getattr(cls, "send_data", None)):
        raise ConfigError(f"destination type {type_name!r}: {path} has no send_data method")
    return cls


def _check_class_options(name: str, type_name: str, cls: type, options: Mapping[str, Any]) -> None:
    signature = inspect.signature(cls)
    params = list(signature.parameters.values())
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        accepted = None
    else:
        accepted = {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    if accepted is not None:
        unknown = sorted(set(options) - accepted)
        if unknown:
            known = sorted(accepted | set(DESTINATION_OPTIONS))
            raise ConfigError(
                f"destination {name!r} ({type_name}): unknown option {unknown[0]!r}; "
                f"known options: {', '.join(known)}"
            )
    missing = [
        p.name
        for p in params
        if p.default is inspect.Parameter.empty
        and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        and p.name not in options
    ]
    if missing:
        raise ConfigError(f"destination {name!r} ({type_name}): missing required option {missing[0]!r}")


def _settings(cls: type, where: str, raw: Any) -> Any:
    if raw is None:
        return None
    if isinstance(raw, cls):
        return raw
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a table, not {type(raw).__name__}")
    fields = {f.name: f for f in attrs.fields(cls)}
    for key in raw:
        if key not in fields:
            raise ConfigError(f"{where}: unknown option {key!r}; known options: {', '.join(fields)}")
    for key, value in raw.items():
        default = fields[key].default
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{where}.{key} must be a non-negative number, not {value!r}")
    return cls(**raw)


def _top_number(raw: Mapping[str, Any], name: str, minimum: float = 0.0) -> Any:
    """The number ``raw[name]``, or :class:`Config`'s default, checked against ``minimum``."""
    return _number(name, raw.get(name, default_of(Config, name)), minimum=minimum)


def _option(where: str, framework: Mapping[str, Any], name: str, minimum: float = 0.0) -> Any:
    """The number ``framework[name]``, or :class:`DestinationSpec`'s default, checked."""
    return _number(f"{where}.{name}", framework.get(name, default_of(DestinationSpec, name)), minimum=minimum)


def _number(where: str, value: Any, *, minimum: float = 0.0) -> Any:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{where} must be a number >= {minimum:g}, not {value!r}")
    return value


def _destination(name: str, raw: Any) -> DestinationSpec:
    if not isinstance(name, str) or not TOPIC_PATTERN.match(name) or name in (".", ".."):
        raise ConfigError(f"destination name {name!r} must match [A-Za-z0-9_.:-]{{1,255}}")
    where = f"destinations.{name}"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a table, not {type(raw).__name__}")
    if "type" not in raw:
        raise ConfigError(f"{where}: missing required option 'type'")
    type_name = raw["type"]
    if not isinstance(type_name, str):
        raise ConfigError(f"{where}.type must be a string, not {type_name!r}")
    cls = resolve_class(type_name)
    framework = {k: raw[k] for k in DESTINATION_OPTIONS if k in raw}
    options = {k: v for k, v in raw.items() if k not in DESTINATION_OPTIONS}
    _check_class_options(name, type_name, cls, options)
    prefix = framework.get("prefix")
    if prefix is not None and (not isinstance(prefix, str) or not prefix):
        raise ConfigError(f"{where}.prefix must be a non-empty string, not {prefix!r}")
    overflow = framework.get("overflow", default_of(DestinationSpec, "overflow"))
    if overflow not in OVERFLOW_POLICIES:
        raise ConfigError(f"{where}.overflow must be one of {', '.join(OVERFLOW_POLICIES)}, not {overflow!r}")
    send_async = framework.get("send_async", default_of(DestinationSpec, "send_async"))
    if not isinstance(send_async, bool):
        raise ConfigError(f"{where}.send_async must be true or false, not {send_async!r}")
    return DestinationSpec(
        name=name,
        type=f"{cls.__module__}:{cls.__qualname__}",
        options=options,
        prefix=prefix,
        send_async=send_async,
        max_in_flight=int(_option(where, framework, "max_in_flight", minimum=1)),
        retry=_settings(RetrySettings, f"{where}.retry", framework.get("retry", {})),
        buffer=_settings(BufferSettings, f"{where}.buffer", framework.get("buffer")),
        max_buffered_rows=int(_option(where, framework, "max_buffered_rows", minimum=1)),
        overflow=overflow,
        block_timeout=float(_option(where, framework, "block_timeout")),
        requires=_strings(
            f"{where}.requires", framework.get("requires", default_of(DestinationSpec, "requires"))
        ),
        linger=float(_option(where, framework, "linger")),
        rows_only=not bool(getattr(cls, "takes_any_data", False)),
        log_time=_log_time(where, cls, options),
    )


def _log_time(where: str, cls: type, options: Mapping[str, Any]) -> tuple[str, str] | None:
    ask = getattr(cls, "log_time", None)
    if ask is None:
        return None
    try:
        wanted = ask(options)
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    if wanted is None:
        return None
    from .stamps import UNIT_NS

    key, unit = wanted
    if not isinstance(key, str) or not key or unit not in UNIT_NS:
        raise ConfigError(f"{where}: log_time() must give a key and one of {sorted(UNIT_NS)}")
    return (key, unit)


def _strings(where: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where} must be a list of strings, not {value!r}")
    if not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where} must be a list of non-empty strings, not {value!r}")
    return tuple(value)


def _dashboard(raw: Any) -> DashboardSettings:
    settings: DashboardSettings = _settings(DashboardSettings, "dashboard", raw)
    if not isinstance(settings.port, int) or not 0 <= settings.port <= 65535:
        raise ConfigError(f"dashboard.port must be a port number (0-65535), not {settings.port!r}")
    if not isinstance(settings.bind, str) or not settings.bind:
        raise ConfigError(f"dashboard.bind must be an address, not {settings.bind!r}")
    if settings.window not in DASHBOARD_WINDOWS:
        raise ConfigError(
            f"dashboard.window must be one of {', '.join(DASHBOARD_WINDOWS)}, not {settings.window!r}"
        )
    if not isinstance(settings.topic, str) or not TOPIC_PATTERN.match(settings.topic):
        raise ConfigError(f"dashboard.topic {settings.topic!r} is not a valid topic name")
    if settings.history is not None and not isinstance(settings.history, str):
        raise ConfigError(f"dashboard.history must name a destination, not {settings.history!r}")
    if settings.refresh < 0.1:
        raise ConfigError(f"dashboard.refresh must be at least 0.1 seconds, not {settings.refresh!r}")
    if not isinstance(settings.max_rows, int) or settings.max_rows < 1:
        raise ConfigError(f"dashboard.max_rows must be a positive integer, not {settings.max_rows!r}")
    return settings


_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _security(raw: Any) -> SecuritySettings:
    if isinstance(raw, SecuritySettings):
        return raw
    if isinstance(raw, Mapping) and "allowed_modules" in raw:
        modules = _strings("security.allowed_modules", raw["allowed_modules"])
        bad = [m for m in modules if not _MODULE_NAME.match(m)]
        if bad:
            raise ConfigError(f"security.allowed_modules: {bad[0]!r} is not a module name")
        raw = {**raw, "allowed_modules": modules}
    settings: SecuritySettings = _settings(SecuritySettings, "security", raw)
    if not isinstance(settings.sign, bool):
        raise ConfigError(f"security.sign must be true or false, not {settings.sign!r}")
    paths: dict[str, Any] = {}
    for name in ("secret_file", "previous_secret_file"):
        value = getattr(settings, name)
        if value is not None and (not isinstance(value, (str, os.PathLike)) or not os.fspath(value)):
            raise ConfigError(f"security.{name} must be a file path, not {value!r}")
        if value is not None:
            paths[name] = os.path.abspath(os.fspath(value))
    settings = attrs.evolve(settings, **paths)
    if settings.max_frame_bytes < 64 * 1024:
        raise ConfigError(f"security.max_frame_bytes must be at least 65536, not {settings.max_frame_bytes}")
    return settings


def load_config(source: Config | Mapping[str, Any] | str | os.PathLike[str] | None) -> Config:
    """Validate a configuration given as a dict, a TOML file path or a :class:`Config`.

    ``None`` gives the embedded default: SQLite and JSONL under ``data_dir``.

    Raises:
        ConfigError: naming the option, destination or file at fault.
    """
    if isinstance(source, Config):
        return source
    if source is None:
        source = default_config()
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            with path.open("rb") as handle:
                raw: Mapping[str, Any] = tomllib.load(handle)
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    elif isinstance(source, Mapping):
        raw = source
    else:
        raise ConfigError(f"config must be a dict or a TOML file path, not {type(source).__name__}")
    unknown = sorted(set(raw) - set(TOP_LEVEL_OPTIONS))
    if unknown:
        raise ConfigError(
            f"unknown top-level option {unknown[0]!r}; known options: {', '.join(TOP_LEVEL_OPTIONS)}"
        )
    destinations_raw = raw.get("destinations", {})
    if not isinstance(destinations_raw, Mapping) or not destinations_raw:
        raise ConfigError("config has no destinations: add at least one [destinations.NAME] table")
    data_dir = raw.get("data_dir", default_of(Config, "data_dir"))
    if not isinstance(data_dir, (str, os.PathLike)):
        raise ConfigError(f"data_dir must be a path, not {data_dir!r}")
    wal = _settings(WalSettings, "wal", raw.get("wal", {}))
    if wal.fsync not in FSYNC_POLICIES:
        raise ConfigError(f"wal.fsync must be one of {', '.join(FSYNC_POLICIES)}, not {wal.fsync!r}")
    cluster_raw = raw.get("cluster", {})
    if isinstance(cluster_raw, Mapping) and "allowed_members" in cluster_raw:
        cluster_raw = {
            **cluster_raw,
            "allowed_members": _strings("cluster.allowed_members", cluster_raw["allowed_members"]),
        }
    cluster = _settings(ClusterSettings, "cluster", cluster_raw)
    security = _security(raw.get("security", {}))
    status = _settings(ProcessStatusSettings, "process_status", raw.get("process_status", {}))
    if not isinstance(status.adapter, str) or not isinstance(status.options, Mapping):
        raise ConfigError("process_status.adapter must be a string and process_status.options a table")
    dashboard = _dashboard(raw.get("dashboard", {}))
    data_dir = os.path.abspath(os.fspath(data_dir))
    spool_dir = raw.get("spool_dir")
    if spool_dir is not None and not isinstance(spool_dir, (str, os.PathLike)):
        raise ConfigError(f"spool_dir must be a path, not {spool_dir!r}")
    if status.adapter == "sqlite" and "path" not in status.options:
        status = attrs.evolve(
            status, options={**status.options, "path": os.path.join(data_dir, "process_status.db")}
        )
    return Config(
        destinations=tuple(_destination(name, spec) for name, spec in destinations_raw.items()),
        data_dir=data_dir,
        wal=wal,
        process_status=status,
        cluster=cluster,
        dashboard=dashboard,
        security=security,
        health_failing_after=float(_top_number(raw, "health_failing_after")),
        log_timeout=float(_top_number(raw, "log_timeout")),
        shutdown_timeout=float(_top_number(raw, "shutdown_timeout")),
        connect_timeout=float(_top_number(raw, "connect_timeout", minimum=0.01)),
        client_buffer_rows=int(_top_number(raw, "client_buffer_rows", minimum=1)),
        spool_dir=os.path.abspath(os.fspath(spool_dir)) if spool_dir is not None else None,
        spool_max_bytes=int(_top_number(raw, "spool_max_bytes", minimum=1)),
        max_topic_supervisors=int(_top_number(raw, "max_topic_supervisors", minimum=2)),
        isolate=_isolate(raw.get("isolate", default_of(Config, "isolate"))),
        idle_after=float(_top_number(raw, "idle_after")),
    )


def default_max_topic_supervisors() -> int:
    """The default of ``max_topic_supervisors``: twice the cores, at least 4."""
    return max(4, 2 * (os.cpu_count() or 1))


def _isolate(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigError(f"isolate must be a list of topic names or prefixes, not {value!r}")
    entries = []
    for entry in value:
        if not isinstance(entry, str) or not entry:
            raise ConfigError(f"isolate: {entry!r} is not a topic name or prefix")
        entries.append(entry)
    return tuple(entries)


def default_config(base_dir: str = "datalogger-demo") -> dict[str, Any]:
    """The embedded default: every topic to SQLite and to JSONL files, no server needed."""
    return {
        "data_dir": os.path.join(base_dir, "state"),
        "destinations": {
            "sqlite": {"type": "sqlite", "path": os.path.join(base_dir, "datalogger.db")},
            "jsonl": {"type": "jsonl", "directory": os.path.join(base_dir, "jsonl")},
        },
    }
