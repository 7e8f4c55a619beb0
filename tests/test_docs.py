"""The user documentation: the reference matches the code, the examples run, mkdocs builds."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import re
import socket
import subprocess
import sys
import tomllib
import typing
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import pytest

import datalogger
from datalogger import config
from datalogger.adapters import ADAPTERS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
REFERENCE = DOCS / "configuration.md"
#: Pages written with the reference; their snippets must at least parse.
OWN_PAGES = (
    "index.md",
    "concepts.md",
    "configuration.md",
    "custom.md",
    "dashboard.md",
    "durability.md",
    "security.md",
    "troubleshooting.md",
    "destinations/sqlite.md",
    "destinations/jsonl.md",
    "destinations/console.md",
)
REGENERATE = "run: python docs/gen_config_reference.py"


def generator() -> ModuleType:
    """docs/gen_config_reference.py, imported from its path."""
    path = DOCS / "gen_config_reference.py"
    spec = importlib.util.spec_from_file_location("gen_config_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_config_reference", module)
    spec.loader.exec_module(module)
    return module


def documented(section: str, page: Path = REFERENCE) -> dict[str, str]:
    """Option name -> default cell of the generated table ``section`` of ``page``."""
    text = page.read_text(encoding="utf-8")
    name = re.escape(section)
    match = re.search(
        rf"<!-- BEGIN GENERATED {name} -->\n(.*?)<!-- END GENERATED {name} -->", text, re.S
    )
    assert match, f"{page.name} has no generated section {section!r}"
    rows = re.findall(r"^\| `([^`]+)` \| ([^|]*) \|", match.group(1), re.M)
    return {name: default.strip() for name, default in rows}


def settings_classes() -> dict[str, type]:
    """Tables held in attrs settings classes, found from Config's and DestinationSpec's fields."""
    found: dict[str, type] = {}
    for owner in (config.DestinationSpec, config.Config):
        hints = typing.get_type_hints(owner)
        for field in attrs.fields(owner):
            for candidate in (hints[field.name], *typing.get_args(hints[field.name])):
                if isinstance(candidate, type) and attrs.has(candidate):
                    found[field.name] = candidate
    found.pop("destinations", None)  # the DestinationSpecs themselves, not a settings table
    return found


def destination_parameters(short: str) -> dict[str, Any]:
    """The keyword arguments of a built-in destination class, with their defaults."""
    cls = config.resolve_class(short)
    return {
        p.name: p.default
        for p in inspect.signature(cls).parameters.values()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }


def adapter_parameters(short: str) -> set[str]:
    """The options a built-in process-status adapter accepts."""
    module = importlib.import_module(ADAPTERS[short].partition(":")[0])
    return set(getattr(module, "_OPTIONS", ()))


def assert_same(section: str, in_code: set[str], in_docs: set[str]) -> None:
    """Fail naming the options missing on either side."""
    missing = sorted(in_code - in_docs)
    extra = sorted(in_docs - in_code)
    assert not missing, f"[{section}] in the code but not in the reference: {missing}; {REGENERATE}"
    assert not extra, f"[{section}] in the reference but not in the code: {extra}; {REGENERATE}"


def shows_default(cell: str, default: Any) -> bool:
    """True when a default cell of the reference shows ``default``."""
    if default is inspect.Parameter.empty:
        return "required" in cell
    if default is None:
        return cell.startswith(("none", "`")) or "required" in cell
    if isinstance(default, bool):
        return cell == ("`true`" if default else "`false`")
    if isinstance(default, str):
        return cell == f'`"{default}"`'
    if isinstance(default, (int, float)):
        return cell == f"`{default!r}`"
    if isinstance(default, (tuple, list)) and not default:
        return cell == "`[]`"
    if isinstance(default, dict) and not default:
        return cell in ("`{}`", "**required**")
    return True


# --------------------------------------------------------------------------- the reference


def test_reference_lists_every_top_level_and_framework_option() -> None:
    top = documented("top-level")
    assert_same("top-level", set(config.TOP_LEVEL_OPTIONS), set(top))
    for name, (default, _) in config.TOP_LEVEL_OPTIONS.items():
        assert shows_default(top[name], default), (name, top[name], default)
    framework = documented("destination")
    assert_same("destination", set(config.DESTINATION_OPTIONS), set(framework))
    assert framework["type"] == "**required**"
    for name, (default, _) in config.DESTINATION_OPTIONS.items():
        assert shows_default(framework[name], default), (name, framework[name], default)


def test_reference_lists_every_settings_field() -> None:
    classes = settings_classes()
    assert {"retry", "buffer", "wal", "process_status"} <= set(classes)
    for section, cls in classes.items():
        rows = documented(section)
        fields = {f.name: f.default for f in attrs.fields(cls)}
        assert_same(section, set(fields), set(rows))
        for name, default in fields.items():
            if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
                default = default.factory()
            assert shows_default(rows[name], default), (section, name, rows[name], default)


@pytest.mark.parametrize("short", sorted(config.DESTINATION_TYPES))
def test_reference_lists_every_option_of_each_built_in_destination(short: str) -> None:
    params = destination_parameters(short)
    rows = documented(f"destination-{short}")
    assert_same(f"destination-{short}", set(params), set(rows))
    for name, default in params.items():
        assert shows_default(rows[name], default), (short, name, rows[name], default)
    page = DOCS / "destinations" / f"{short}.md"
    if page.exists() and "BEGIN GENERATED" in page.read_text(encoding="utf-8"):
        assert documented(f"destination-{short}", page) == rows


@pytest.mark.parametrize("short", sorted(ADAPTERS))
def test_reference_lists_every_option_of_each_built_in_adapter(short: str) -> None:
    options = adapter_parameters(short)
    text = REFERENCE.read_text(encoding="utf-8")
    if not options:
        assert f"<!-- BEGIN GENERATED adapter-{short} -->\nTakes no options." in text
        return
    assert_same(f"adapter-{short}", options, set(documented(f"adapter-{short}")))


def test_reference_lists_every_destination_type_and_adapter() -> None:
    assert set(documented("destination-types")) == set(config.DESTINATION_TYPES)
    assert set(documented("adapter-types")) == set(ADAPTERS)


def test_generated_tables_are_current() -> None:
    stale = generator().stale()
    assert not stale, f"stale tables in {[str(p.relative_to(ROOT)) for p in stale]}; {REGENERATE}"


def test_generator_rewrites_a_stale_table() -> None:
    gen = generator()
    text = "intro\n<!-- BEGIN GENERATED wal -->\nold\n<!-- END GENERATED wal -->\nend\n"
    new = gen.rewrite(text, gen.sections())
    assert "old" not in new and "| `fsync` |" in new and new.endswith("end\n")
    with pytest.raises(LookupError, match="unknown generated section"):
        gen.rewrite("<!-- BEGIN GENERATED nosuch -->\n<!-- END GENERATED nosuch -->", {})


# --------------------------------------------------------------------------- examples


def marked_blocks(page: Path, language: str) -> list[str]:
    """Fenced ``language`` blocks that follow a ``<!-- test -->`` line."""
    text = page.read_text(encoding="utf-8")
    return re.findall(rf"<!-- test -->\n```{language}\n(.*?)\n```", text, re.S)


def all_blocks(page: Path, language: str) -> list[str]:
    """Every fenced ``language`` block of ``page``."""
    return re.findall(rf"^```{language}\n(.*?)\n```", page.read_text(encoding="utf-8"), re.S | re.M)


@pytest.mark.parametrize("name", OWN_PAGES)
def test_snippets_parse(name: str) -> None:
    page = DOCS / name
    for block in all_blocks(page, "toml"):
        tomllib.loads(block)
    for block in all_blocks(page, "python"):
        compile(block, f"{name} snippet", "exec")


@pytest.mark.parametrize("name", OWN_PAGES)
def test_marked_toml_examples_are_valid_configurations(name: str) -> None:
    for block in marked_blocks(DOCS / name, "toml"):
        loaded = config.load_config(tomllib.loads(block))
        assert loaded.destinations


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_getting_started_snippets_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first snippet of docs/index.md on simpleSystemBase, the second on multiprocTCPBase."""
    first, second = marked_blocks(DOCS / "index.md", "python")
    monkeypatch.chdir(tmp_path)
    real_start = datalogger.start
    namespace: dict[str, Any] = {"__name__": "docs_index"}
    monkeypatch.setattr(datalogger, "start", functools.partial(real_start, base="simpleSystemBase"))
    exec(compile(first, "docs/index.md (first snippet)", "exec"), namespace)
    monkeypatch.setattr(datalogger, "start", functools.partial(real_start, admin_port=free_port()))
    exec(compile(second, "docs/index.md (second snippet)", "exec"), namespace)
    import sqlite3

    with sqlite3.connect(tmp_path / "data.db") as conn:
        assert conn.execute('SELECT count(*) FROM "green"').fetchone() == (4,)


# --------------------------------------------------------------------------- the API page


def public_modules() -> list[str]:
    """Every module of the package with no ``_``-prefixed part in its name (``__main__`` aside)."""
    import pkgutil

    return sorted(
        module.name
        for module in pkgutil.walk_packages(datalogger.__path__, "datalogger.")
        if not any(part.startswith("_") for part in module.name.split("."))
    )


def test_api_page_documents_every_public_module() -> None:
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^::: ([\w.]+)\s*$", text, re.M))
    modules = public_modules()
    assert {"datalogger.logging", "datalogger.metrics", "datalogger.health", "datalogger.analytics"} <= set(
        modules
    )
    missing = [name for name in modules if name not in listed]
    assert not missing, f"docs/api.md has no '::: NAME' for: {', '.join(missing)}"
    stale = sorted(listed - set(modules) - {"datalogger"})
    assert not stale, f"docs/api.md names modules that do not exist: {', '.join(stale)}"


def test_metrics_page_names_every_metric(tmp_path: Path) -> None:
    """Every family a scrape can hold, with every section of stats() present, is on the page."""
    from datalogger.metrics import StatsCollector

    lane = {key: 1 for key in ("received", "delivered", "buffered", "latency_p50", "latency_p99")}
    lane.update(last_error_at=1.0, last_success_at=1.0, failing_since=1.0)
    stats = {"topics": {"t": {"d": lane}}, "rejected": 0, "client": {"queued": 1, "sent": 1}}
    pubsub_stats = {
        "topics": {"requests": {"broadcast": 1, "subscribers": 1}},
        "subscribers": [{"topic": "requests", "address": "a", "delivered": 1, "dropped": 0, "pending": 0}],
    }
    collector = StatsCollector(lambda: stats, tmp_path, lambda: pubsub_stats)
    names = {f"{f.name}_total" if f.type == "counter" else f.name for f in collector.collect()}
    page = (DOCS / "metrics.md").read_text(encoding="utf-8")
    missing = sorted(name for name in names if f"`{name}`" not in page)
    assert not missing, f"docs/metrics.md does not describe: {', '.join(missing)}"
    assert len(names) > 25


# --------------------------------------------------------------------------- the site


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    if not all(importlib.util.find_spec(name) for name in ("mkdocs", "mkdocstrings")):
        pytest.skip("mkdocs or mkdocstrings is not installed: pip install -e '.[docs]'")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "configuration" / "index.html").exists()
    assert 'id="datalogger.system.DataLogger"' in (
        tmp_path / "site" / "api" / "index.html"
    ).read_text(encoding="utf-8")
