"""The one loader of ``package.module:Name`` strings.

Destination types, storage adapters and DataBuffer classes are all named in
configuration as ``package.module:Name`` (``Name`` may be dotted, for a class
nested in another). :func:`import_by_path` imports what such a string names and
turns every way it can fail into a :class:`~datalogger.ConfigError` that says
what was being loaded and why it could not be.
"""

from __future__ import annotations

import importlib
from typing import Any

from .exceptions import ConfigError

__all__ = ["import_by_path", "is_import_path"]


def is_import_path(path: str) -> bool:
    """True when ``path`` has the form ``package.module:Name`` (both parts non-empty)."""
    module_name, sep, attr_path = path.partition(":")
    return bool(sep and module_name.strip() and attr_path.strip())


def import_by_path(path: str, what: str, *, import_hint: str = "") -> Any:
    """Import and return the object named by ``"package.module:Name"``.

    Args:
        path: the string from the configuration.
        what: how error messages name the thing loaded (``"destination type 'x'"``).
        import_hint: appended to the message when the module cannot be imported
            (for example how to install an optional dependency).

    Raises:
        ConfigError: ``path`` is not of that form, its module cannot be
            imported, or the module has no such name.
    """
    if not is_import_path(path):
        raise ConfigError(f"{what}: {path!r} is not of the form 'package.module:Name'")
    module_name, _, attr_path = path.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{what}: cannot import {module_name!r}: {exc}{import_hint}") from exc
    try:
        for part in attr_path.split("."):
            found = getattr(found, part)
    except AttributeError:
        raise ConfigError(f"{what}: {module_name!r} has no {attr_path!r}") from None
    return found
