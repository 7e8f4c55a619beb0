"""Config defaults are written once, in the attrs fields, and every other view reads them there."""

from __future__ import annotations

import attrs
import pytest

from datalogger import config
from datalogger.config import Config, DestinationSpec, default_of, load_config

MINIMAL = {"destinations": {"db": {"type": "memory"}}}


def test_an_empty_config_takes_every_default_from_the_fields() -> None:
    loaded = load_config(MINIMAL)
    for field in attrs.fields(Config):
        if field.name in ("destinations", "data_dir", "process_status"):
            continue  # required / made absolute / given the sqlite path under data_dir
        assert getattr(loaded, field.name) == default_of(Config, field.name), field.name
    spec = loaded.destinations[0]
    for field in attrs.fields(DestinationSpec):
        if field.name in ("name", "type", "options", "rows_only", "log_time"):
            continue  # not options: derived from the table's key and the class
        assert getattr(spec, field.name) == default_of(DestinationSpec, field.name), field.name


def test_a_changed_field_default_changes_parser_and_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """The parser, TOP_LEVEL_OPTIONS and DESTINATION_OPTIONS all read the one default."""
    real = default_of

    def shifted(cls: type, name: str) -> object:
        if (cls, name) == (Config, "log_timeout"):
            return 12.5
        if (cls, name) == (DestinationSpec, "linger"):
            return 0.75
        return real(cls, name)

    monkeypatch.setattr(config, "default_of", shifted)
    loaded = load_config(MINIMAL)
    assert loaded.log_timeout == 12.5
    assert loaded.destinations[0].linger == 0.75
    assert config._shown_defaults(Config, {"log_timeout": "x"})["log_timeout"][0] == 12.5


def test_the_reference_shows_the_fields_defaults() -> None:
    assert config.TOP_LEVEL_OPTIONS["log_timeout"][0] == attrs.fields_dict(Config)["log_timeout"].default
    assert config.TOP_LEVEL_OPTIONS["isolate"][0] == []  # a tuple field, written as a TOML list
    assert config.TOP_LEVEL_OPTIONS["wal"][0] == {}  # a settings table
    rows = attrs.fields_dict(DestinationSpec)["max_buffered_rows"].default
    assert config.DESTINATION_OPTIONS["max_buffered_rows"][0] == rows
    assert config.DESTINATION_OPTIONS["type"][0] is None  # required


def test_a_field_without_a_default_is_named() -> None:
    with pytest.raises(KeyError, match=r"Config\.destinations has no default"):
        default_of(Config, "destinations")
