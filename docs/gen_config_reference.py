"""Generate the option tables of the configuration reference from the code.

The tables in ``docs/configuration.md`` and in the built-in destination pages
sit between marker comments::

    <!-- BEGIN GENERATED retry -->
    ...
    <!-- END GENERATED retry -->

This script rewrites what is between them. Names and defaults come from the
code: :data:`datalogger.config.TOP_LEVEL_OPTIONS`,
:data:`datalogger.config.DESTINATION_OPTIONS`, the fields of the attrs settings
classes, the ``__init__`` signature of every built-in destination and the
option names of every built-in process-status adapter. Descriptions come from
the same places, or from the docstrings next to them.

Usage::

    python docs/gen_config_reference.py          # rewrite the tables
    python docs/gen_config_reference.py --check  # exit 1 if a table is stale
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import re
import sys
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from datalogger import config  # noqa: E402
from datalogger.adapters import ADAPTERS  # noqa: E402

#: The files holding generated tables.
FILES = (
    DOCS / "configuration.md",
    DOCS / "destinations" / "sqlite.md",
    DOCS / "destinations" / "jsonl.md",
    DOCS / "destinations" / "console.md",
)

BEGIN = "<!-- BEGIN GENERATED {} -->"
END = "<!-- END GENERATED {} -->"
_MARKER = re.compile(r"<!-- BEGIN GENERATED (?P<name>[\w.-]+) -->")

#: One example per framework and settings option (the ``Example`` column).
EXAMPLES: dict[str, str] = {
    "top.data_dir": 'data_dir = "/var/lib/datalogger"',
    "top.log_timeout": "log_timeout = 5.0",
    "top.connect_timeout": "connect_timeout = 0.5",
    "top.client_buffer_rows": "client_buffer_rows = 500000",
    "top.spool_dir": 'spool_dir = "/var/spool/myapp-datalogger"',
    "top.spool_max_bytes": "spool_max_bytes = 10737418240",
    "top.shutdown_timeout": "shutdown_timeout = 30.0",
    "top.max_topic_supervisors": "max_topic_supervisors = 16",
    "top.isolate": 'isolate = ["billing", "tenant.vip.*"]',
    "top.idle_after": "idle_after = 3600.0",
    "top.destinations": 'destinations = { db = { type = "sqlite", path = "data.db" } }',
    "top.health_failing_after": "health_failing_after = 300.0",
    "top.wal": 'wal = { fsync = "always" }',
    "top.process_status": 'process_status = { adapter = "redis" }',
    "destination.type": 'type = "mypackage.sinks:Webhook"',
    "destination.prefix": 'prefix = "metrics."',
    "destination.send_async": "send_async = true",
    "destination.max_in_flight": "max_in_flight = 8",
    "destination.retry": "retry = { max_attempts = 10 }",
    "destination.buffer": "buffer = { max_size = 5000, interval = 2.0 }",
    "destination.max_buffered_rows": "max_buffered_rows = 20000",
    "destination.overflow": 'overflow = "block"',
    "destination.block_timeout": "block_timeout = 2.0",
    "retry.max_attempts": "max_attempts = 10",
    "retry.initial_delay": "initial_delay = 1.0",
    "retry.max_delay": "max_delay = 300.0",
    "retry.multiplier": "multiplier = 3.0",
    "retry.jitter": "jitter = 0.5",
    "retry.stop": "Python only: `tenacity.stop_after_delay(600)`",
    "retry.wait": "Python only: `tenacity.wait_fixed(2)`",
    "retry.retry": "Python only: `tenacity.retry_if_exception_type(OSError)`",
    "buffer.max_size": "max_size = 5000",
    "buffer.interval": "interval = 5.0",
    "buffer.jitter": "jitter = 0.5",
    "wal.fsync": 'fsync = "always"',
    "wal.fsync_interval": "fsync_interval = 1.0",
    "wal.segment_bytes": "segment_bytes = 67108864",
    "process_status.adapter": 'adapter = "postgres"',
    "process_status.options": 'options = { dsn = "postgresql://app@127.0.0.1/db" }',
    "top.cluster": 'cluster = { allowed_members = ["10.8.0.0/24"] }',
    "destination.requires": 'requires = ["postgres"]',
    "cluster.allowed_members": 'allowed_members = ["10.8.0.2", "10.8.0.3:1900"]',
    "cluster.heartbeat_interval": "heartbeat_interval = 2.0",
    "cluster.heartbeat_timeout": "heartbeat_timeout = 10.0",
    "top.dashboard": 'dashboard = { port = 8080, window = "15m" }',
    "dashboard.port": "port = 8080",
    "dashboard.bind": 'bind = "127.0.0.1"',
    "dashboard.window": 'window = "15m"',
    "dashboard.topic": 'topic = "web.requests"',
    "dashboard.history": 'history = "warehouse"',
    "dashboard.refresh": "refresh = 2.0",
    "dashboard.history_refresh": "history_refresh = 300.0",
    "dashboard.max_rows": "max_rows = 500000",
    "top.security": 'security = { secret_file = "/etc/datalogger/secret" }',
    "security.sign": "sign = false",
    "security.secret_file": 'secret_file = "/etc/datalogger/secret"',
    "security.previous_secret_file": 'previous_secret_file = "/etc/datalogger/secret.old"',
    "security.previous_secret_grace": "previous_secret_grace = 86400.0",
    "security.allowed_modules": 'allowed_modules = ["myapp.events"]',
    "security.max_frame_bytes": "max_frame_bytes = 1073741824",
}

#: Descriptions for options whose class documents none (the testing destination).
FALLBACK_DESCRIPTIONS: dict[tuple[str, str], str] = {
    ("memory", "directory"): (
        "Also append the rows as JSON lines to `<directory>/<topic>.jsonl`, to read them "
        "back with `datalogger.testing.read_captured` from another process."
    ),
}


@attrs.frozen
class Option:
    """One row of a generated table."""

    name: str
    default: str
    description: str
    example: str | None = None


# --------------------------------------------------------------------------- text helpers


def rst_to_md(text: str) -> str:
    """Turn the reStructuredText bits of a docstring into Markdown, on one line."""
    text = re.sub(r":\w+:`~?(?:[\w.]+\.)?([\w]+)`", r"`\1`", text)
    text = text.replace("``", "`")
    return " ".join(text.split())


def literal(value: Any) -> str:
    """A default value as it is written in TOML (``none`` for None)."""
    if value is inspect.Parameter.empty:
        return "**required**"
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, (int, float)):
        return f"`{value!r}`"
    if isinstance(value, (tuple, list)):
        return "`[" + ", ".join(literal(v).strip("`") for v in value) + "]`"
    if isinstance(value, Mapping):
        return "`{}`" if not value else f"`{dict(value)!r}`"
    return f"`{value!r}`"


def cell(text: str) -> str:
    """Escape a table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def table(options: Iterable[Option], with_example: bool) -> str:
    """A Markdown table of ``options``."""
    head = "| Option | Default | Description |"
    rule = "|---|---|---|"
    if with_example:
        head += " Example |"
        rule += "---|"
    lines = [head, rule]
    for option in options:
        row = f"| `{option.name}` | {cell(option.default)} | {cell(option.description)} |"
        if with_example:
            example = option.example or "—"
            if not example.startswith("Python only"):
                example = f"`{example}`"
            row += f" {cell(example)} |"
        lines.append(row)
    return "\n".join(lines)


# --------------------------------------------------------------------------- docstring parsing


def attribute_docstrings(cls: type) -> dict[str, str]:
    """The docstrings written under the fields of ``cls`` (a string right after ``x: int = 1``)."""
    source = inspect.getsource(sys.modules[cls.__module__])
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and node.name == cls.__name__:
            docs: dict[str, str] = {}
            body = node.body
            for stmt, following in zip(body, [*body[1:], None], strict=True):
                if (
                    isinstance(stmt, ast.AnnAssign)
                    and isinstance(stmt.target, ast.Name)
                    and isinstance(following, ast.Expr)
                    and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str)
                ):
                    docs[stmt.target.id] = inspect.cleandoc(following.value.value)
            return docs
    raise LookupError(f"class {cls.__name__} not found in {cls.__module__}")


def google_args(docstring: str | None) -> dict[str, str]:
    """The entries of the ``Args:`` section of a Google-style docstring.

    An entry naming several parameters (``host, port: ...``) is given to each.
    """
    if not docstring:
        return {}
    lines = inspect.cleandoc(docstring).splitlines()
    found: dict[str, str] = {}
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Args:")
    except StopIteration:
        return found
    base = len(lines[start]) - len(lines[start].lstrip())
    names: list[str] = []
    for line in lines[start + 1 :]:
        indent = len(line) - len(line.lstrip())
        if line.strip() and indent <= base:
            break
        match = re.match(r"^\s*([\w, ]+):\s*(.*)$", line)
        if match and indent == base + 4:
            names = [n.strip() for n in match.group(1).split(",") if n.strip()]
            for name in names:
                found[name] = match.group(2)
        elif names and line.strip():
            for name in names:
                found[name] += " " + line.strip()
    return {name: rst_to_md(text) for name, text in found.items()}


_TERM = re.compile(r"^``(\w+)``")


def definition_list(docstring: str | None) -> dict[str, tuple[str | None, str]]:
    """The ``Options:`` definition list of a module docstring: name -> (default, description).

    A term looks like ````name```` or ````name`` (default ``x``)`` or
    ````a``, ````b```` (several names sharing one description); the
    description is indented under it. ``default`` is None when the term gives
    none, ``"required"`` when it says so.
    """
    if not docstring:
        return {}
    lines = inspect.cleandoc(docstring).splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Options:")
    except StopIteration:
        return {}
    found: dict[str, tuple[str | None, str]] = {}
    names: list[str] = []
    default: str | None = None
    for line in lines[start + 1 :]:
        if not line.strip():
            continue
        if line[0] != " ":
            if not _TERM.match(line):
                break
            head, _, paren = line.partition("(")
            names = re.findall(r"``(\w+)``", head)
            default = None
            if paren:
                inner = paren.rsplit(")", 1)[0].strip()
                inner = re.sub(r"^default\s+", "", inner)
                default = "required" if inner == "required" else rst_to_md(inner)
            for name in names:
                found[name] = (default, "")
        elif names:
            for name in names:
                old_default, text = found[name]
                found[name] = (old_default, (text + " " + line.strip()).strip())
    return {name: (d, rst_to_md(text)) for name, (d, text) in found.items()}


def markdown_option_table(path: Path) -> dict[str, tuple[str, str]]:
    """``(default, description)`` from the ``## Options`` table of a hand-written page."""
    if not path.exists():
        return {}
    found: dict[str, tuple[str, str]] = {}
    in_options = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            in_options = line.strip() == "## Options"
            continue
        match = re.match(r"^\| `(\w+)` \|([^|]*)\|(.*)\|\s*$", line)
        if in_options and match:
            found[match.group(1)] = (match.group(2).strip(), match.group(3).strip())
    return found


# --------------------------------------------------------------------------- option sources


def example(prefix: str, name: str, default: Any) -> str | None:
    """The example of :data:`EXAMPLES`, else ``name = <default>`` for a plain default."""
    if f"{prefix}.{name}" in EXAMPLES:
        return EXAMPLES[f"{prefix}.{name}"]
    if isinstance(default, (bool, int, float, str)):
        return f"{name} = {literal(default).strip('`')}"
    return None


def dict_options(prefix: str, options: Mapping[str, tuple[Any, str]]) -> list[Option]:
    """Rows for ``TOP_LEVEL_OPTIONS`` or ``DESTINATION_OPTIONS``."""
    rows = []
    for name, (default, description) in options.items():
        shown = "**required**" if "Required." in description else literal(default)
        rows.append(Option(name, shown, description, example(prefix, name, default)))
    return rows


def settings_options(prefix: str, cls: type) -> list[Option]:
    """Rows for an attrs settings class, described by its field docstrings."""
    docs = attribute_docstrings(cls)
    fields = attrs.fields(cls)
    rows = []
    for field in fields:
        default = field.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = default.factory()
        if field.name not in docs:
            raise LookupError(f"{cls.__name__}.{field.name} has no docstring")
        rows.append(
            Option(
                field.name,
                literal(default),
                rst_to_md(docs[field.name]),
                example(prefix, field.name, default),
            )
        )
    return rows


def destination_options(short: str) -> list[Option]:
    """Rows for a built-in destination: its ``__init__`` keyword arguments."""
    cls = config.resolve_class(short)
    module = sys.modules[cls.__module__]
    # The hand-written page of a destination wins (its owner keeps it), then the docstrings.
    page = markdown_option_table(DOCS / "destinations" / f"{short}.md")
    described: dict[str, str] = {}
    init = cls.__dict__.get("__init__")
    described.update(google_args(init.__doc__ if init is not None else None))
    described.update(google_args(cls.__doc__))
    described.update({k: v for k, (_, v) in definition_list(module.__doc__).items()})
    described = {k: v[:1].upper() + v[1:] for k, v in described.items()}
    described.update({k: v for k, (_, v) in page.items()})
    rows = []
    for param in inspect.signature(cls).parameters.values():
        if param.kind not in (param.KEYWORD_ONLY, param.POSITIONAL_OR_KEYWORD):
            continue
        text = described.get(param.name) or FALLBACK_DESCRIPTIONS.get((short, param.name))
        if not text:
            raise LookupError(f"destination {short!r}: option {param.name!r} has no description")
        shown = literal(param.default)
        if param.default is None and page.get(param.name, ("",))[0]:
            shown = page[param.name][0]  # "none, required for ..." says more than "none"
        rows.append(Option(param.name, shown, text))
    return rows


def adapter_option_names(short: str) -> tuple[str, ...]:
    """The options a built-in process-status adapter accepts."""
    module = importlib.import_module(ADAPTERS[short].partition(":")[0])
    return tuple(getattr(module, "_OPTIONS", ()))


def adapter_options(short: str) -> list[Option]:
    """Rows for a built-in process-status adapter, from its module docstring."""
    module = importlib.import_module(ADAPTERS[short].partition(":")[0])
    described = definition_list(module.__doc__)
    rows = []
    for name in adapter_option_names(short):
        if name not in described:
            raise LookupError(f"adapter {short!r}: option {name!r} is not in its module docstring")
        default, text = described[name]
        if default is None:
            shown = "none"
        elif default == "required":
            shown = "**required**"
        else:
            shown = default
        if short == "sqlite" and name == "path":
            shown = "`<data_dir>/process_status.db`"
        rows.append(Option(name, shown, text))
    return rows


# --------------------------------------------------------------------------- sections


def settings_classes() -> dict[str, type]:
    """Option tables held in settings classes: ``retry``, ``buffer``, ``wal``...

    Found from the fields of :class:`~datalogger.config.Config` and
    :class:`~datalogger.config.DestinationSpec` whose type is an attrs class.
    """
    found: dict[str, type] = {}
    for owner in (config.DestinationSpec, config.Config):
        hints = typing.get_type_hints(owner)
        for field in attrs.fields(owner):
            hint = hints[field.name]
            for candidate in (hint, *typing.get_args(hint)):
                if isinstance(candidate, type) and attrs.has(candidate):
                    found[field.name] = candidate
    found.pop("destinations", None)
    return found


def sections() -> dict[str, str]:
    """Marker name -> generated Markdown."""
    out = {
        "top-level": table(dict_options("top", config.TOP_LEVEL_OPTIONS), True),
        "destination": table(dict_options("destination", config.DESTINATION_OPTIONS), True),
        "destination-types": "\n".join(
            ["| Type | Class |", "|---|---|"]
            + [f"| `{k}` | `{v}` |" for k, v in config.DESTINATION_TYPES.items()]
        ),
        "adapter-types": "\n".join(
            ["| Adapter | Class |", "|---|---|"]
            + [f"| `{k}` | `{v}` |" for k, v in ADAPTERS.items()]
        ),
    }
    for name, cls in settings_classes().items():
        out[name] = table(settings_options(name, cls), True)
    for short in config.DESTINATION_TYPES:
        out[f"destination-{short}"] = table(destination_options(short), False)
    for short in ADAPTERS:
        rows = adapter_options(short)
        out[f"adapter-{short}"] = table(rows, False) if rows else "Takes no options."
    return out


def rewrite(text: str, generated: Mapping[str, str], where: str = "") -> str:
    """Replace the body of every marked section of ``text``."""
    for match in list(_MARKER.finditer(text)):
        name = match.group("name")
        if name not in generated:
            raise LookupError(f"{where}: unknown generated section {name!r}")
    for name, body in generated.items():
        begin, end = BEGIN.format(name), END.format(name)
        if begin not in text:
            continue
        head, rest = text.split(begin, 1)
        if end not in rest:
            raise LookupError(f"{where}: {begin} has no {end}")
        _, tail = rest.split(end, 1)
        text = f"{head}{begin}\n{body}\n{end}{tail}"
    return text


def render() -> dict[Path, str]:
    """The new content of every file in :data:`FILES`."""
    generated = sections()
    used: set[str] = set()
    out = {}
    for path in FILES:
        text = path.read_text(encoding="utf-8")
        used.update(m.group("name") for m in _MARKER.finditer(text))
        out[path] = rewrite(text, generated, str(path))
    unused = sorted(set(generated) - used)
    if unused:
        raise LookupError(f"generated sections placed in no page: {', '.join(unused)}")
    return out


def stale() -> list[Path]:
    """The files whose tables differ from what the code gives."""
    return [path for path, text in render().items() if path.read_text(encoding="utf-8") != text]


def main(argv: list[str] | None = None) -> int:
    """Rewrite the tables, or with ``--check`` report the stale files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a table is stale")
    args = parser.parse_args(argv)
    if args.check:
        paths = stale()
        for path in paths:
            print(f"stale: {path.relative_to(ROOT)} (run python docs/gen_config_reference.py)")
        return 1 if paths else 0
    for path, text in render().items():
        if path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"rewrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
