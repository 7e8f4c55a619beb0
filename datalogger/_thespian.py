"""How datalogger starts and reaches Thespian actor systems.

Thespian's TCP transport moves Python pickles: anyone who can reach an actor
port can run code in the node. Left alone, Thespian binds every socket to
all interfaces and guesses the address it tells others from the route
towards 8.8.8.8 or from the ``THESPIAN_BASE_IPADDR`` environment variable.
This module replaces the guess with explicit addresses, carried by each
actor system's capabilities rather than by the environment:

* ``datalogger.admin_host`` (:data:`ADMIN_HOST_CAPABILITY`) names the host of
  the admin a system talks to: the node's own bind address on a node, the
  node's address on a client (:func:`datalogger.connect`).
* Every other socket of a system listens on, and is known by, this host's
  address towards its peer (:func:`address_towards`): the peer's address
  itself when it is one of this host's (a node's actors, on the node's bind
  address), else the source address of the route towards it (a client on
  another host).

Nothing is put in ``os.environ``, so a node's start changes nothing for
other processes, and ``THESPIAN_BASE_IPADDR`` set by someone else does not
move a node. The patches below apply to the whole process as soon as this
module is imported; the processes of a node are forked from the process that
starts it and inherit them.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from thespian.actors import ActorAddress
from thespian.system.admin import convention
from thespian.system.messages.convention import CONV_ADDR_IPV4_CAPABILITY
from thespian.system.transport import ExternalInterfaceTransportInit, IPBase
from thespian.system.transport.TCPTransport import (
    TCPTransport,
    TCPv4ActorAddress,
    TXOnlyAdminTCPv4ActorAddress,
)

from .exceptions import DataLoggerError

__all__ = [
    "ADMIN_HOST_CAPABILITY",
    "ALLOWED_CAPABILITY",
    "BIND_CAPABILITY",
    "DEFAULT_ADMIN_PORT",
    "DEFAULT_BIND",
    "LEADER_CAPABILITY",
    "NODE_CAPABILITY",
    "address_towards",
    "check_port_free",
    "default_allowed",
    "log_defs",
    "member_allowed",
    "port_open",
]

DEFAULT_ADMIN_PORT = 1900
"""Thespian's own default admin port."""
DEFAULT_BIND = "127.0.0.1"
"""Where a node listens unless told otherwise."""
ADMIN_HOST_CAPABILITY = "datalogger.admin_host"
"""Capability naming the host of the admin a system talks to (see the module docstring)."""
BIND_CAPABILITY = "datalogger.bind"
"""Capability of a client's endpoint: the address of this host its sockets listen on."""
ALLOWED_CAPABILITY = "datalogger.allowed_members"
"""Capability of a leader: the entries of ``cluster.allowed_members`` it enforces."""
NODE_CAPABILITY = "datalogger.node"
"""Capability naming a node (``host:port`` of its admin); used to place actors on it."""
LEADER_CAPABILITY = "datalogger.leader"
"""Capability of the node leading the convention."""

log = logging.getLogger("datalogger.cluster")


# --------------------------------------------------------------------------- addresses


def resolve(host: str) -> str:
    """``host`` as an IPv4 address.

    Raises:
        DataLoggerError: the name does not resolve to an IPv4 address.
    """
    try:
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        pass
    try:
        return str(socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0])
    except (OSError, IndexError) as exc:
        raise DataLoggerError(f"cannot resolve {host!r} to an IPv4 address: {exc}") from exc


def is_own_address(host: str) -> bool:
    """True when a socket of this host (network namespace) can bind to ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((host, 0))
        except OSError:
            return False
    return True


def address_towards(host: str) -> str:
    """This host's address for talking with ``host``.

    ``host`` itself when it is an address of this host; else the source
    address the routing table picks towards it (no packet is sent).

    Raises:
        DataLoggerError: ``host`` does not resolve, or no route leads there.
    """
    address = resolve(host)
    if is_own_address(address):
        return address
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((address, 9))
        except OSError as exc:
            raise DataLoggerError(f"no route from this host to {host}: {exc}") from exc
        return str(probe.getsockname()[0])


def _peer_host(external: Any) -> str | None:
    """The host of the peer Thespian names in an address's ``external`` argument."""
    if isinstance(external, list):
        return _peer_host(external[0]) if external else None
    if isinstance(external, tuple):
        return str(external[0]) if external and external[0] else None
    if isinstance(external, str):
        return external or None
    details = getattr(external, "addressDetails", external)
    sockname = getattr(details, "sockname", None)
    return str(sockname[0]) if sockname else None


_original_address_init = IPBase.IPActorAddress.__init__
_original_admin_addr = TCPTransport.getAdminAddr
_original_transport_init = TCPTransport.__init__
_original_clone = TCPTransport.external_transport_clone
_original_probe = TCPTransport.probeAdmin
_original_register = convention.LocalConventionState.got_convention_register
_own = threading.local()
"""``address``: this thread is building the transport of an endpoint told to listen there."""


def _address_init(
    self: Any, af: Any, socktype: Any, proto: Any, baseaddr: Any, port: Any, external: Any = False
) -> None:
    """An address of this host is the one towards its peer, and is listened on alone."""
    if external and af == socket.AF_INET and baseaddr in (None, "", "0.0.0.0"):
        baseaddr = getattr(_own, "address", None)
        if baseaddr is None:
            peer = _peer_host(external)
            try:
                baseaddr = address_towards(peer) if peer else DEFAULT_BIND
            except DataLoggerError:
                baseaddr = DEFAULT_BIND
        IPBase.thisSystem.add_local_addr(baseaddr)
    _original_address_init(self, af, socktype, proto, baseaddr, port, external)
    if external and self.bindname[0] == "":
        self.bindname = (self.sockname[0], self.bindname[1])


def _admin_addr(capabilities: dict[str, Any]) -> Any:
    """The admin's address: ``datalogger.admin_host`` and the admin port, when given."""
    host = capabilities.get(ADMIN_HOST_CAPABILITY)
    if not host:
        return _original_admin_addr(capabilities)
    kind = TXOnlyAdminTCPv4ActorAddress if capabilities.get("Outbound Only") else TCPv4ActorAddress
    return ActorAddress(kind(host, capabilities.get("Admin Port", DEFAULT_ADMIN_PORT), external=True))


def _transport_init(self: Any, init_type: Any, *args: Any) -> None:
    """An external endpoint (a handle) takes its address towards its admin, or the one it is given."""
    own = getattr(_own, "address", None)
    if isinstance(init_type, ExternalInterfaceTransportInit) and args:
        capabilities = args[0]
        host = capabilities.get(ADMIN_HOST_CAPABILITY)
        if host:
            port = capabilities.get("Admin Port", DEFAULT_ADMIN_PORT)
            args = ({**capabilities, CONV_ADDR_IPV4_CAPABILITY: (host, port)}, *args[1:])
        own = capabilities.get(BIND_CAPABILITY) or own
    previous, _own.address = getattr(_own, "address", None), own
    try:
        _original_transport_init(self, init_type, *args)
    finally:
        _own.address = previous
    self._datalogger_own = own


def _clone(self: Any) -> Any:
    """A private endpoint (``system.private()``) listens where its parent endpoint does."""
    previous, _own.address = getattr(_own, "address", None), getattr(self, "_datalogger_own", None)
    try:
        return _original_clone(self)
    finally:
        _own.address = previous


def _got_convention_register(self: Any, regmsg: Any) -> Any:
    """A leader refuses the registration of systems not on its allow list."""
    allowed = self.capabilities.get(ALLOWED_CAPABILITY)
    if allowed is not None:
        try:
            host, port = regmsg.adminAddress.addressDetails.sockname[:2]
        except AttributeError:
            return []
        if not member_allowed(str(host), int(port), allowed):
            log.warning(
                "refused a convention registration from %s:%s: not in cluster.allowed_members", host, port
            )
            return []
    return _original_register(self, regmsg)


def _probe_admin(addr: Any) -> bool:
    """Is an admin running there? Thespian tries to bind its port, which on another host
    always fails, and then starts an admin of its own: ask the other host instead."""
    host, port = addr.addressDetails.sockname[:2]
    if not is_own_address(host):
        return port_open(host, port)
    return bool(_original_probe(addr))


IPBase.IPActorAddress.__init__ = _address_init
TCPTransport.getAdminAddr = staticmethod(_admin_addr)
TCPTransport.__init__ = _transport_init
TCPTransport.external_transport_clone = _clone
TCPTransport.probeAdmin = staticmethod(_probe_admin)
convention.LocalConventionState.got_convention_register = _got_convention_register


# --------------------------------------------------------------------------- ports


def port_open(host: str, port: int, timeout: float = 1.0, source: str | None = None) -> bool:
    """True when something accepts TCP connections on ``host:port`` (from ``source``, if given)."""
    try:
        with socket.create_connection((host, port), timeout=timeout, source_address=(source or "", 0)):
            return True
    except OSError:
        return False


def check_port_free(host: str, port: int, what: str) -> None:
    """Make sure a node can listen on ``host:port``, as Thespian will (``SO_REUSEADDR``).

    Raises:
        DataLoggerError: naming ``what`` the port is for and why it cannot be used.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
            probe.listen(1)
        except OSError as exc:
            if port_open(host, port):
                raise DataLoggerError(
                    f"{what} {host}:{port} is already in use: a node (or another program) listens there"
                ) from exc
            raise DataLoggerError(f"cannot listen on {host}:{port} for the {what}: {exc.strerror}") from exc


def log_defs(level: int = logging.WARNING) -> dict[str, Any]:
    """A logging configuration for the actor processes (``logDefs=False`` crashes them)."""
    return {
        "version": 1,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain", "level": level}},
        "loggers": {"datalogger": {"level": level, "handlers": ["stderr"], "propagate": False}},
        "root": {"level": logging.ERROR, "handlers": ["stderr"]},
    }


# --------------------------------------------------------------------------- conventions


def _parse(entry: str) -> tuple[str, int] | ipaddress.IPv4Network | ipaddress.IPv6Network:
    host, sep, port = entry.rpartition(":")
    if sep and port.isdigit() and "/" not in entry:
        return (host, int(port))
    return ipaddress.ip_network(entry, strict=False)


def check_allowed(entries: Iterable[str]) -> tuple[str, ...]:
    """``cluster.allowed_members`` entries, checked.

    Raises:
        DataLoggerError: an entry is neither ``host``, ``host:port`` nor a network.
    """
    checked = []
    for entry in entries:
        try:
            _parse(entry)
        except ValueError as exc:
            raise DataLoggerError(
                f"cluster.allowed_members: {entry!r} is not a host, host:port or network ({exc})"
            ) from exc
        checked.append(entry)
    return tuple(checked)


def default_allowed(bind: str) -> tuple[str, ...]:
    """Who may join a leader bound to ``bind`` when ``cluster.allowed_members`` is empty.

    The networks of the interface that holds ``bind`` (``10.8.0.0/24`` for a
    leader on ``10.8.0.1/24``; ``127.0.0.0/8`` on loopback), and 127.0.0.1.
    """
    import psutil

    found = ["127.0.0.1"]
    for addresses in psutil.net_if_addrs().values():
        for item in addresses:
            if item.family == socket.AF_INET and item.address == bind and item.netmask:
                found.append(str(ipaddress.ip_network(f"{bind}/{item.netmask}", strict=False)))
    if len(found) == 1 and bind != "127.0.0.1":
        found.append(bind)
    return tuple(dict.fromkeys(found))


def member_allowed(host: str, port: int, entries: Sequence[str]) -> bool:
    """True when ``entries`` (``host``, ``host:port`` or networks) admit ``host:port``."""
    for entry in entries:
        try:
            parsed = _parse(entry)
        except ValueError:
            continue
        if isinstance(parsed, tuple):
            if parsed == (host, port):
                return True
            continue
        try:
            if ipaddress.ip_address(host) in parsed:
                return True
        except ValueError:
            continue
    return False
