"""How datalogger starts and reaches Thespian actor systems.

Thespian's TCP transport moves Python pickles: anyone who can reach an actor
port can run code in the node. Thespian binds its admin and actor sockets to
every interface; :func:`bind_to` makes them bind to one address instead
(127.0.0.1 unless configured), before any actor system is created. The
processes of a node are forked from the process that starts it, so they
inherit the setting.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from thespian.system.transport import IPBase

__all__ = ["DEFAULT_ADMIN_PORT", "DEFAULT_BIND", "bind_to", "log_defs", "port_open"]

DEFAULT_ADMIN_PORT = 1900
"""Thespian's own default admin port."""
DEFAULT_BIND = "127.0.0.1"
"""Where a node listens unless told otherwise."""

_bound: str | None = None
_original_init = IPBase.IPActorAddress.__init__


def _patched_init(self: Any, *args: Any, **kwargs: Any) -> None:
    _original_init(self, *args, **kwargs)
    if _bound is not None and self.bindname and self.bindname[0] == "":
        self.bindname = (_bound, self.bindname[1])


def bind_to(address: str = DEFAULT_BIND) -> None:
    """Make every Thespian TCP socket created from now on listen on ``address`` only."""
    global _bound
    _bound = address
    os.environ.setdefault("THESPIAN_BASE_IPADDR", address)
    IPBase.IPActorAddress.__init__ = _patched_init


def log_defs(level: int = logging.WARNING) -> dict[str, Any]:
    """A logging configuration for the actor processes (``logDefs=False`` crashes them)."""
    return {
        "version": 1,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain", "level": level}},
        "loggers": {"datalogger": {"level": level, "handlers": ["stderr"], "propagate": False}},
        "root": {"level": logging.ERROR, "handlers": ["stderr"]},
    }


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- conventions

NODE_CAPABILITY = "datalogger.node"
"""Capability naming a node (``host:port`` of its admin); used to place actors on it."""
LEADER_CAPABILITY = "datalogger.leader"
"""Capability of the node leading the convention."""

_allowed: list[Any] | None = None


def member_allowed(host: str, port: int) -> bool:
    """True when the allow list set by :func:`allow_members` admits ``host:port``."""
    import ipaddress

    if _allowed is None:
        return True
    for entry in _allowed:
        if isinstance(entry, tuple):
            if entry == (host, port):
                return True
        else:
            try:
                if ipaddress.ip_address(host) in entry:
                    return True
            except ValueError:
                continue
    return False


def allow_members(entries: list[str] | tuple[str, ...]) -> None:
    """Make this process's convention leader refuse systems not listed in ``entries``.

    Entries are ``host``, ``host:port`` or a network such as ``10.0.0.0/24``.
    An empty list allows 127.0.0.1 only. Applies to admins started after the call.
    """
    import ipaddress

    from thespian.system.admin import convention

    global _allowed
    parsed: list[Any] = []
    for entry in entries or ("127.0.0.1",):
        host, sep, port = entry.rpartition(":")
        if sep and port.isdigit() and "/" not in entry:
            parsed.append((host, int(port)))
        else:
            parsed.append(ipaddress.ip_network(entry, strict=False))
    _allowed = parsed
    state = convention.LocalConventionState
    if getattr(state.got_convention_register, "_datalogger", False):
        return
    original = state.got_convention_register

    def got_convention_register(self: Any, regmsg: Any) -> Any:
        try:
            host, port = regmsg.adminAddress.addressDetails.sockname[:2]
        except AttributeError:
            return []
        if not member_allowed(str(host), int(port)):
            logging.getLogger("datalogger.cluster").warning(
                "refused a convention registration from %s:%s: not in allowed_members", host, port
            )
            return []
        return original(self, regmsg)

    got_convention_register._datalogger = True  # type: ignore[attr-defined]
    state.got_convention_register = got_convention_register
