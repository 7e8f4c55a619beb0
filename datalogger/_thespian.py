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
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "plain", "level": level}
        },
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
