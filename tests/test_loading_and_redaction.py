"""The one loader of ``module:Name`` strings and the one password masker."""

from __future__ import annotations

import pytest

from datalogger import ConfigError
from datalogger.actors.buffer_actor import load_buffer_class
from datalogger.adapters import load_adapter
from datalogger.config import resolve_class
from datalogger.destinations.postgres import mask_dsn
from datalogger.loading import import_by_path
from datalogger.redaction import redact, secrets_in


def test_import_by_path_finds_nested_names() -> None:
    assert import_by_path("collections:OrderedDict", "thing").__name__ == "OrderedDict"
    assert import_by_path("datalogger.config:Config.destinations_for", "thing").__name__ == "destinations_for"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("nocolon", r"thing: 'nocolon' is not of the form 'package\.module:Name'"),
        ("mod:", "is not of the form"),
        (":Name", "is not of the form"),
        ("no_such_pkg_xyz.mod:Name", "thing: cannot import 'no_such_pkg_xyz.mod'"),
        ("collections:NoSuchName", "thing: 'collections' has no 'NoSuchName'"),
    ],
)
def test_import_by_path_names_what_failed(path: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        import_by_path(path, "thing")


def test_every_loader_goes_through_the_one_loader() -> None:
    """Destination types, adapters and buffer classes fail alike, naming what was loaded."""
    with pytest.raises(ConfigError, match=r"destination type 'x.y:Z': cannot import 'x.y'"):
        resolve_class("x.y:Z")
    with pytest.raises(ConfigError, match=r"adapter 'x.y:Z': cannot import 'x.y'"):
        load_adapter("x.y:Z")
    with pytest.raises(ConfigError, match=r"buffer class: cannot import 'x.y'"):
        load_buffer_class("x.y:Z")
    with pytest.raises(ConfigError, match="collections:OrderedDict is not a DataBuffer subclass"):
        load_buffer_class("collections:OrderedDict")


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("postgresql://u:pw@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgres://u@h/db?password=pw&sslmode=off", "postgres://u@h/db?password=***&sslmode=off"),
        ("redis://:tok@h:6379/0?password=pw2&db=1", "redis://:***@h:6379/0?password=***&db=1"),
        ("host=h user=u password=pw dbname=d", "host=h user=u password=*** dbname=d"),
        ("host=h PASSWORD = 'p w\\'x' dbname=d", "host=h PASSWORD = *** dbname=d"),
        ("failed: connection to host=h failed", "failed: connection to host=h failed"),
    ],
)
def test_redact_masks_every_form_and_keeps_the_rest(text: str, masked: str) -> None:
    assert redact(text) == masked


def test_redact_masks_given_secrets_wherever_they_appear() -> None:
    options = {"dsn": "postgresql://u:s%40cret@h/db", "api_token": "T0K", "port": 5}
    secrets = secrets_in(options)
    assert secrets == {"s%40cret", "s@cret", "T0K"}
    assert redact("server said: bad token T0K for s@cret", secrets) == "server said: bad token *** for ***"


def test_mask_dsn_is_redact_plus_the_parsed_password() -> None:
    """A password the patterns cannot see (an odd key order) is still masked, via libpq's parse."""
    dsn = "host=h password=a&b dbname=d"
    assert "a&b" not in mask_dsn(dsn) and "&b" not in mask_dsn(dsn)
    assert mask_dsn("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"
