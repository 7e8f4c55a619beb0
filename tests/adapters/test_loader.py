"""The adapter registry, ``load_adapter`` and ``create_adapter``."""

from __future__ import annotations

import sys

import pytest

from datalogger.adapters import ADAPTERS, create_adapter, load_adapter
from datalogger.adapters.base import StorageAdapter
from datalogger.adapters.memory import MemoryAdapter
from datalogger.exceptions import ConfigError, DataLoggerError
from tests.adapters.sample_adapter import MyAdapter


def test_every_short_name_loads_a_storage_adapter() -> None:
    assert sorted(ADAPTERS) == ["memory", "none", "postgres", "redis", "sqlite"]
    for name, target in ADAPTERS.items():
        cls = load_adapter(name)
        assert issubclass(cls, StorageAdapter)
        assert f"{cls.__module__}:{cls.__qualname__}" == target
    assert load_adapter("memory") is MemoryAdapter


def test_module_class_spec_and_class_object_load() -> None:
    assert load_adapter("datalogger.adapters.memory:MemoryAdapter") is MemoryAdapter
    assert load_adapter(MemoryAdapter) is MemoryAdapter


def test_user_adapter_is_loaded_and_started_with_its_options() -> None:
    assert load_adapter("tests.adapters.sample_adapter:MyAdapter") is MyAdapter
    adapter = create_adapter("tests.adapters.sample_adapter:MyAdapter", {"colour": "blue"})
    assert isinstance(adapter, MyAdapter)
    assert adapter.options == {"colour": "blue"}
    adapter.item_processed_many([("a", 1), ("b", 2), ("a", 3)])  # the base class's loop
    assert sorted(adapter.load()) == [("a", 3), ("b", 2)]


def test_unknown_short_name_names_the_value_and_the_known_names() -> None:
    with pytest.raises(ConfigError) as info:
        load_adapter("mongo")
    message = str(info.value)
    assert "'mongo'" in message
    for name in ADAPTERS:
        assert name in message


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("no_such_package.mod:Adapter", "no_such_package"),
        ("tests.adapters.sample_adapter:Missing", "Missing"),
        ("tests.adapters.sample_adapter:NotAnAdapter", "not a subclass"),
        ("tests.adapters.sample_adapter:NOT_A_CLASS", "not a subclass"),
        ("tests.adapters.sample_adapter:Incomplete", "load, reset"),
        ("tests.adapters.sample_adapter:", "unknown adapter"),
        ("", "known adapters"),
    ],
)
def test_bad_specs_are_refused(spec: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_adapter(spec)


def test_missing_optional_dependency_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg -> ImportError
    monkeypatch.delitem(sys.modules, "datalogger.adapters.postgres", raising=False)
    with pytest.raises(ConfigError, match=r"pip install 'datalogger\[postgres\]'"):
        load_adapter("postgres")


def test_create_adapter_turns_bad_options_into_config_error(tmp_path: object) -> None:
    with pytest.raises(ConfigError, match="'path'"):
        create_adapter("sqlite", {})
    with pytest.raises(ConfigError, match="tabel"):
        create_adapter("memory", {"tabel": "x"})
    with pytest.raises(ConfigError, match="not a valid identifier"):
        create_adapter("sqlite", {"path": ":memory:", "table": "x; drop table y"})


def test_create_adapter_masks_the_password_of_a_failing_user_adapter() -> None:
    with pytest.raises(DataLoggerError) as info:
        create_adapter("tests.adapters.sample_adapter:FailingAdapter", {"password": "hunter2xyz"})
    assert not isinstance(info.value, ConfigError)
    assert "login refused" in str(info.value)
    assert "hunter2xyz" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__
