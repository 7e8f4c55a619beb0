"""What a frame may build when it is unpickled: the restricted unpickler of signed frames.

Defence in depth behind the frames' signatures (:mod:`datalogger.security`):
even a frame signed with the node's secret may only construct the classes of
:data:`ALLOWED_MODULES` (Thespian's and datalogger's messages and addresses,
plain data), of the modules ``security.allowed_modules`` adds, and the few
single names of :data:`SINGLE_NAMES`. Anything else is refused before its
module is imported.
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import Callable, Sequence
from typing import IO, Any

__all__ = ["ALLOWED_MODULES", "SINGLE_NAMES", "RestrictedUnpickler", "may_load"]

#: Modules whose classes a frame may build (the module or its submodules).
ALLOWED_MODULES = (
    "thespian.actors",
    "thespian.system.messages",
    "thespian.system.logdirector",
    "thespian.system.transport.IPBase",
    "datalogger.messages",
    "datalogger.config",
    "datalogger.placement",
    "datalogger.exceptions",
    "datalogger.analytics",
    "tenacity",
    "datetime",
    "decimal",
    "fractions",
    "uuid",
    "ipaddress",
    "pathlib",
    "collections",
    "zoneinfo",
    "dateutil.tz",
)
#: Types of ``builtins`` a frame may build; exception classes are allowed too.
_BUILTINS = frozenset(
    "set frozenset bytearray complex slice range list dict tuple str bytes int float bool".split()
)
#: Single names allowed beside those modules: types, and callables that only rebuild a value.
SINGLE_NAMES = frozenset(
    {
        ("thespian.system.transport", "ForwardMessage"),
        ("thespian.system.transport.TCPTransport", "RoutedTCPv4ActorAddress"),
        ("thespian.system.transport.TCPTransport", "TXOnlyAdminTCPv4ActorAddress"),
        ("logging", "LogRecord"),
        ("socket", "AddressFamily"),
        ("socket", "SocketKind"),
        ("zoneinfo", "ZoneInfo._unpickle"),
        ("pytz", "_p"),
    }
)
#: What ``getattr`` may fetch while unpickling (a pickled classmethod is ``getattr(cls, name)``).
_GETATTR = frozenset({("zoneinfo", "ZoneInfo", "_unpickle")})

#: ``reject(reason, detail)``: count and report a refused frame, then raise.
Reject = Callable[[str, str], Any]

#: Names already found allowed and imported, by ``(module, name)``.
cache: dict[tuple[str, str], Any] = {}


def may_load(module: str, name: str, extra_modules: Sequence[str] = ()) -> bool:
    """True when a frame may build ``module.name`` (checked before ``module`` is imported)."""
    if (module, name) in SINGLE_NAMES:
        return True
    if any(part.startswith("__") for part in name.split(".")):
        return False
    if module == "builtins":
        found = getattr(sys.modules["builtins"], name, None)
        return name in _BUILTINS or (isinstance(found, type) and issubclass(found, BaseException))
    return any(module == m or module.startswith(m + ".") for m in (*ALLOWED_MODULES, *extra_modules))


class RestrictedUnpickler(pickle.Unpickler):
    """A :class:`pickle.Unpickler` that builds only what :func:`may_load` allows.

    Args:
        file: the pickle, after its signature was checked.
        extra_modules: the modules ``security.allowed_modules`` adds.
        reject: called with ``(reason, detail)`` for a forbidden name; it must raise.
    """

    def __init__(self, file: IO[bytes], extra_modules: Sequence[str], reject: Reject) -> None:
        super().__init__(file)
        self._extra_modules = extra_modules
        self._reject = reject

    def find_class(self, module: str, name: str) -> Any:
        """The class ``module.name``, when the allow list has it; else ``reject``."""
        found = cache.get((module, name))
        if found is not None:
            return found
        if (module, name) == ("builtins", "getattr"):
            return self._restricted_getattr
        if not may_load(module, name, self._extra_modules):
            self._reject("forbidden class", f"{module}.{name}")
        found = super().find_class(module, name)
        if not isinstance(found, type) and (module, name) not in SINGLE_NAMES:
            self._reject("forbidden class", f"{module}.{name} is not a class")
        cache[(module, name)] = found
        return found

    def _restricted_getattr(self, obj: Any, name: str) -> Any:
        """``builtins.getattr`` as a frame may use it: only the pairs of ``_GETATTR``."""
        if (getattr(obj, "__module__", None), getattr(obj, "__qualname__", None), name) not in _GETATTR:
            self._reject(
                "forbidden class", f"getattr({getattr(obj, '__qualname__', type(obj).__name__)}, {name!r})"
            )
        return getattr(obj, name)
