"""Signed frames: no pickle runs in a node unless it carries the node's secret.

Thespian's TCP transport moves pickles, and unpickling runs code chosen by the
sender. It builds every frame with the module global
``thespian.system.transport.TCPTransport.serializer`` (``dumps``) and its
receive buffers unpickle with that global's ``loads``. :func:`install` puts
:data:`SERIALIZER` there, so that every frame, acknowledgements included, is::

    b"DLs1" | key id (4 bytes) | HMAC-SHA256(secret, pickle) (32 bytes) | pickle

and nothing is unpickled before :func:`hmac.compare_digest` found the MAC
right. A frame that fails (truncated, unsigned, signed with another secret or
with the previous one after its grace period, a wrong MAC, announced larger
than ``max_frame_bytes``, or naming a class outside the allow list) is dropped
unread, counted in memory shared by the node's processes (``stats()["security"]``,
metrics) and logged at most once a minute per process with the peer's address.

Even a signed frame goes through a restricted unpickler: only the classes of
:data:`ALLOWED_MODULES` (Thespian's and datalogger's messages and addresses,
plain data) and of ``security.allowed_modules`` can be built; the allow list
and that unpickler live in ``datalogger._allowlist``.

The hook must be in place before an actor system is created. Thespian forks
its admin and actor processes from the process that starts the node, and they
inherit it. The transport class handed to them, :class:`SignedTCPTransport`,
refuses to run in a process without the hook (one started by ``spawn``), so
nothing runs unsigned by accident. Tested with :data:`TESTED_THESPIAN`
(pinned in pyproject.toml); :func:`install` fails loudly on a Thespian that
lacks what the hook relies on.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import os
import pickle
import sys
import threading
import time
import weakref
from typing import Any

import attrs
import thespian.system.transport.streamBuffer as _streams
import thespian.system.transport.TCPTransport as _tcp
from thespian.actors import ActorSystem
from thespian.system import multiprocTCPBase
from thespian.system.transport import ExternalInterfaceTransportInit, SendStatus

from . import _allowlist
from ._allowlist import ALLOWED_MODULES
from ._rejections import Rejections
from .exceptions import SecurityError
from .keyfiles import SECRET_ENV, Keyring, client_keyring, node_keyring

__all__ = [
    "ALLOWED_MODULES",
    "SERIALIZER",
    "TESTED_THESPIAN",
    "RejectedFrame",
    "SignedTCPTransport",
    "install",
    "install_client",
    "install_node",
    "installed",
    "probe",
    "register",
    "rejections",
    "use",
]

log = logging.getLogger("datalogger.security")

TESTED_THESPIAN = ("4.0.1",)
"""Thespian versions the hook is tested with."""
MAGIC = b"DLs1"
HEADER = len(MAGIC) + 4 + 32
"""Bytes before the pickle: magic, key id, MAC."""
ALERT_INTERVAL = 60.0
"""Seconds between two log lines about dropped frames in one process."""

class RejectedFrame(Exception):
    """A received frame failed a check and was dropped unread."""


@attrs.define
class _State:
    ring: Keyring | None = None
    prefix: bytes = b""
    """``MAGIC`` and the current secret's key id."""
    previous_prefix: bytes = b""
    acks_until: float = 0.0
    """Epoch seconds when Thespian's prebuilt acknowledgements must be signed again."""
    counters: Rejections | None = None
    lock: Any = attrs.field(factory=threading.Lock)
    alert_lock: Any = attrs.field(factory=threading.Lock)
    alerted_at: float | None = None
    suppressed: int = 0
    in_node_process: bool = False
    known_frames: dict[int, tuple[bytes, Any]] = attrs.field(factory=dict)
    """Acknowledgement frames signed with the current secret, by length (see ``_known_frames``)."""
    users: Any = attrs.field(factory=weakref.WeakSet)


_state = _State()
_receiving = threading.local()


def _key_id(secret: bytes) -> bytes:
    return hashlib.sha256(b"datalogger key id\0" + secret).digest()[:4]


# --------------------------------------------------------------------------- frames


def _extra_modules() -> tuple[str, ...]:
    """The modules ``security.allowed_modules`` adds to the allow list."""
    return tuple(_state.ring.allowed_modules) if _state.ring is not None else ()


class _Serializer:
    """Stands in for the ``pickle`` module as Thespian's ``TCPTransport.serializer``."""

    def dumps(self, obj: Any) -> bytes:
        """Pickle ``obj`` and sign it (with the previous secret early in a rotation)."""
        payload = pickle.dumps(obj)
        ring = _state.ring
        if ring is None or not ring.sign:
            return payload
        if ring.previous and time.time() < ring.sign_previous_until:
            return b"".join((_state.previous_prefix, hmac.digest(ring.previous, payload, "sha256"), payload))
        return b"".join((_state.prefix, hmac.digest(ring.secret, payload, "sha256"), payload))

    def loads(self, frame: bytes) -> Any:
        """Check a frame's MAC, then unpickle it with the restricted unpickler."""
        known = _state.known_frames.get(len(frame))
        if known is not None and hmac.compare_digest(known[0], frame):
            return known[1]  # an acknowledgement: the same signed bytes every time
        try:
            payload = _open(frame)
        except _Refusal as refusal:
            payload = _reject(*refusal.args)
        return _allowlist.RestrictedUnpickler(io.BytesIO(payload), _extra_modules(), _reject).load()


def _known_frames(ring: Keyring) -> dict[int, tuple[bytes, Any]]:
    """Thespian's acknowledgements as frames signed with the current secret, by length.

    Every message is answered with one of two constant strings, so half the frames a node
    reads are one of two byte strings: recognised whole (a constant-time comparison), they
    need neither a MAC computed nor an unpickler. Anything else, acknowledgements signed with
    the previous secret included, takes the full check.
    """
    if not ring.sign:
        return {}
    known: dict[int, tuple[bytes, Any]] = {}
    for packet in (_tcp.ackPacket, _streams.ackDataErrPacket):
        payload = pickle.dumps(packet)
        frame = b"".join((MAGIC, _key_id(ring.secret), hmac.digest(ring.secret, payload, "sha256"), payload))
        known[len(frame)] = (frame, packet)
    if len(known) != 2:  # two lengths the same: keep to the full check rather than guess
        return {}
    return known


class _Refusal(Exception):
    """``(reason, detail)`` of a frame that fails a check."""


def _open(frame: bytes) -> Any:
    """The pickle inside a frame whose MAC is right; raises :class:`_Refusal` otherwise."""
    ring = _state.ring
    if ring is None:
        raise _Refusal("no secret", "this process has no keyring")
    if len(frame) > ring.max_frame_bytes + HEADER:
        raise _Refusal("oversize", f"{len(frame)} bytes")
    if not ring.sign:
        if frame[:4] == MAGIC:
            raise _Refusal("signed", "a signed frame, and this process has security.sign = false")
        return frame
    if frame[:4] != MAGIC:
        raise _Refusal("unsigned", "no datalogger signature")
    if len(frame) < HEADER:
        raise _Refusal("truncated", f"{len(frame)} bytes")
    key_id = frame[4:8]
    if key_id == _state.prefix[4:]:
        secret = ring.secret
    elif key_id == _state.previous_prefix[4:] and ring.previous:
        if time.time() > ring.previous_until:
            raise _Refusal("previous secret expired", "signed with the previous secret after the grace")
        secret = ring.previous
    else:
        raise _Refusal("unknown secret", "signed with another secret")
    payload = memoryview(frame)[HEADER:]
    if not hmac.compare_digest(hmac.digest(secret, payload, "sha256"), frame[8:HEADER]):
        raise _Refusal("bad signature", "the MAC does not match the frame")
    return payload


SERIALIZER = _Serializer()
"""The serializer installed into Thespian."""


# --------------------------------------------------------------------------- dropped frames


def _peer() -> str:
    source = getattr(_receiving, "source", None)
    try:
        host, port = source.socket.getpeername()[:2]  # type: ignore[union-attr]
        return f"{host}:{port}"
    except Exception:
        return "an unknown peer"


def _reject(reason: str, detail: str) -> Any:
    peer = _peer()
    if _state.counters is not None:
        _state.counters.record(peer.rpartition(":")[0] or peer, reason)
    _alert(peer, reason, detail)
    raise RejectedFrame(f"{reason}: {detail}") from None


def _alert(peer: str, reason: str, detail: str) -> None:
    now = time.monotonic()
    with _state.alert_lock:
        if _state.alerted_at is not None and now - _state.alerted_at < ALERT_INTERVAL:
            _state.suppressed += 1
            return
        more, _state.suppressed, _state.alerted_at = _state.suppressed, 0, now
    text = (
        f"dropped a frame from {peer} unread ({reason}: {detail})"
        + (f"; {more} more dropped by this process since the last report" if more else "")
        + f" (pid {os.getpid()}); only peers with this node's secret can talk to it, see docs/security.md"
    )
    if _state.in_node_process:  # logging here would go through the very transport we are in
        sys.stderr.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} WARNING datalogger.security: {text}\n")
        sys.stderr.flush()
    else:
        log.warning("%s", text)


def rejections() -> dict[str, Any]:
    """Frames the node dropped, over all its processes: ``stats()["security"]``.

    ``{"signing": bool, "rejected_frames": n, "rejected_by_reason": {reason: n},
    "refused_peers": [{"peer", "frames", "last_reason", "last_at"}, ...]}``
    """
    counts = _state.counters.snapshot() if _state.counters is not None else Rejections.empty()
    return {"signing": bool(_state.ring is not None and _state.ring.sign), **counts}


def probe(host: str, port: int, timeout: float = 5.0, source: str | None = None) -> None:
    """Check, with one frame and its answer, that the node on ``host:port`` shares our secret.

    The frame asks the admin to look for dead children, which it does on
    every SIGCHLD anyway: a message with no effect. Nothing listening, or an
    answer that is not a frame, is left for Thespian to report.

    Raises:
        SecurityError: the node signs with another secret, does not sign
            (``security.sign = false``), or dropped our frame.
    """
    import socket

    from thespian.system.messages.multiproc import ChildMayHaveDied

    frame = _tcp.toSendBuffer((None, ChildMayHaveDied()), SERIALIZER.dumps)
    try:
        with socket.create_connection((host, port), timeout, (source or "", 0)) as sock:
            sock.sendall(frame)
            answer = _read_frame(sock)
    except OSError:
        return
    if answer is None:
        return
    ours = _state.ring.source if _state.ring is not None else "no secret"
    try:
        reply = _allowlist.RestrictedUnpickler(io.BytesIO(_open(answer)), _extra_modules(), _reject).load()
    except _Refusal as refusal:
        reason = refusal.args[0]
        why = {
            "unsigned": "the node does not sign its frames (security.sign = false there)",
            "signed": "the node signs its frames and this process has security.sign = false",
        }.get(reason, f"the node's secret is not this process's secret, {ours}")
        raise SecurityError(
            f"cannot talk to the node on {host}:{port}: {why}. Name the node's secret with "
            f"--secret-file, {SECRET_ENV}, --config or secret_file=; see docs/security.md"
        ) from None
    except Exception:
        return
    if reply != _streams.ackPacket:
        raise SecurityError(
            f"the node on {host}:{port} dropped this process's frame although it shares its secret "
            f"({ours}): it may accept the previous secret only, see its log"
        )


def _read_frame(sock: Any, limit: int = 4096) -> bytes | None:
    head = b""
    while b">" not in head:
        chunk = sock.recv(1)
        if not chunk or len(head) > 20:
            return None
        head += chunk
    size = head[:-1]
    if not size.isdigit() or int(size) > limit:
        return None
    body = b""
    while len(body) < int(size):
        chunk = sock.recv(int(size) - len(body))
        if not chunk:
            return None
        body += chunk
    return body


# --------------------------------------------------------------------------- the Thespian hook


class _BoundedReceiveBuffer(_tcp.ReceiveBuffer):
    """Thespian's receive buffer, cutting off a frame without a length or announced larger than
    the limit (the frame counts as complete, and refused), and unpickling a complete frame once
    however often Thespian asks for it."""

    _opened: Any = None
    _refused: str | None = None

    def addMore(self, buf: bytes) -> None:
        if self._refused is not None:
            return
        try:
            super().addMore(buf)
        except ValueError:
            self._refuse("malformed", "no frame length")
            return
        ring = _state.ring
        if self._size is None and len(self._buf) >= 20:  # Thespian would keep it for 7 minutes
            self._refuse("malformed", "no frame length in the first 20 bytes")
        elif self._size is not None and ring is not None and self._size > ring.max_frame_bytes + HEADER:
            self._refuse("oversize", f"{self._size} bytes announced, the limit is {ring.max_frame_bytes}")

    def _refuse(self, reason: str, detail: str) -> None:
        try:
            _reject(reason, detail)
        except RejectedFrame as refused:
            self._refused = str(refused)
        self._buf, self._extra = b"", b""

    def isDone(self) -> bool:
        return self._refused is not None or bool(super().isDone())

    def completed(self) -> Any:
        if self._refused is not None:
            raise RejectedFrame(self._refused)  # counted when refused
        if self._size is None or self._blen != self._size:
            return None
        if self._opened is None:
            self._opened = (self._deserialize(self._buf),)
        return self._opened[0], self._extra


class SignedTCPTransport(_tcp.TCPTransport):
    """Thespian's TCP transport, as handed to every admin and actor process Thespian starts.

    In a process without the hook (one started by ``spawn``, which imports
    this class but inherits nothing) it refuses to run rather than run unsigned.
    """

    def __init__(self, initType: Any, *args: Any) -> None:
        if _state.ring is None or _tcp.serializer is not SERIALIZER:
            raise SecurityError(
                "datalogger's frame signing is not installed in this process (started by 'spawn'?): "
                "refusing to run an unsigned transport"
            )
        if not isinstance(initType, ExternalInterfaceTransportInit | _tcp.ExternalTransportCopy):
            _state.in_node_process = True  # an admin or actor process
        super().__init__(initType, *args)


# Wrappers of TCPTransport's methods, set on the class itself so that every transport of the
# process has them, Thespian's clones of type TCPTransport included.


def _handle_readable(original: Any) -> Any:
    def _handleReadableIncoming(self: Any, inc: Any, *args: Any, **kwargs: Any) -> Any:
        _receiving.source = inc  # the peer, should its frame be dropped
        try:
            return original(self, inc, *args, **kwargs)
        finally:
            _receiving.source = None

    return _handleReadableIncoming


def _added_data(original: Any) -> Any:
    def _addedDataToIncoming(self: Any, inc: Any, *args: Any, **kwargs: Any) -> Any:
        if time.time() >= _state.acks_until:  # a rotation moved on: sign the ACKs with the new secret
            _sign_acks()
        _receiving.source = inc
        try:
            if inc.receivedAllData():
                try:
                    if inc.data is None:  # unpickled once here; Thespian's own call reuses it
                        _reject("malformed", "no frame length")
                except RejectedFrame:  # dropped and reported: no traceback in Thespian's log
                    try:
                        inc.socket.send(_tcp.ackDataErrMsg)
                    except Exception:
                        pass
                    inc.close()
                    return None
                except Exception:
                    pass  # Thespian reports other errors itself
            return original(self, inc, *args, **kwargs)
        finally:
            _receiving.source = None

    return _addedDataToIncoming


def _check_answer(original: Any) -> Any:
    def _check_XMIT_4_done(self: Any, intent: Any, rcv: Any) -> Any:
        """The answer to a frame we sent: a dropped one fails the transmit instead of wedging it."""
        _receiving.source = intent
        try:
            return original(self, intent, rcv)
        except RejectedFrame:
            intent.result = SendStatus.BadPacket
            intent.stage = self._XMITStepFinishCleanup
            return self._nextTransmitStep(intent)
        finally:
            _receiving.source = None

    return _check_XMIT_4_done


_WRAPPERS = {
    "_handleReadableIncoming": _handle_readable,
    "_addedDataToIncoming": _added_data,
    "_check_XMIT_4_done": _check_answer,
}


_MODULE_NAMES = ("serializer", "ReceiveBuffer", "toSendBuffer", "ackMsg", "ackDataErrMsg", "ackPacket")
_METHODS = (*_WRAPPERS, "_nextTransmitStep", "_XMITStepFinishCleanup")


def _check_thespian() -> None:
    import multiprocessing
    from importlib import metadata

    version = metadata.version("thespian")
    missing = [n for n in _MODULE_NAMES if not hasattr(_tcp, n)]
    missing += [n for n in _METHODS if not hasattr(_tcp.TCPTransport, n)]
    if not hasattr(_streams, "ackDataErrPacket"):
        missing.append("ackDataErrPacket")
    if multiprocTCPBase.ActorSystemBase.transportType not in (_tcp.TCPTransport, SignedTCPTransport):
        missing.append("multiprocTCPBase transportType")
    if missing:
        raise SecurityError(
            f"cannot install frame signing in Thespian {version} (tested with "
            f"{', '.join(TESTED_THESPIAN)}): it lacks {', '.join(missing)}; refusing to run unsigned"
        )
    if "fork" not in multiprocessing.get_all_start_methods():
        raise SecurityError("frame signing needs the 'fork' start method, which this platform lacks")
    running = getattr(getattr(ActorSystem, "systemBase", None), "transport", None)
    if running is not None and not isinstance(running, SignedTCPTransport):
        raise SecurityError(
            "an actor system was created in this process before datalogger installed frame "
            "signing: start or connect datalogger before creating ActorSystem() yourself"
        )
    if version not in TESTED_THESPIAN:
        log.warning("Thespian %s is not among the versions frame signing is tested with", version)


def _sign_acks() -> None:
    """Rebuild Thespian's prebuilt acknowledgement frames with the secret signing now."""
    ring = _state.ring
    _tcp.ackMsg = _tcp.toSendBuffer(_tcp.ackPacket, SERIALIZER.dumps)
    _tcp.ackDataErrMsg = _tcp.toSendBuffer(_streams.ackDataErrPacket, SERIALIZER.dumps)
    rotating = ring is not None and ring.sign and ring.previous and time.time() < ring.sign_previous_until
    _state.acks_until = ring.sign_previous_until if rotating and ring is not None else float("inf")


def _patch_thespian() -> None:
    for name, wrap in _WRAPPERS.items():
        method = getattr(_tcp.TCPTransport, name)
        if not getattr(method, "_datalogger", False):
            wrapped = wrap(method)
            wrapped._datalogger = True
            setattr(_tcp.TCPTransport, name, wrapped)
    _tcp.serializer = SERIALIZER
    _tcp.ReceiveBuffer = _BoundedReceiveBuffer
    _sign_acks()
    multiprocTCPBase.ActorSystemBase.transportType = SignedTCPTransport
    # self-test: a frame built as Thespian builds one comes back through Thespian's buffer
    buffer = _tcp.ReceiveBuffer(_tcp.serializer.loads)
    buffer.addMore(_tcp.toSendBuffer(("self-test", {"n": 1}), _tcp.serializer.dumps))
    if not buffer.isDone() or buffer.completed()[0] != ("self-test", {"n": 1}):
        raise SecurityError("frame signing failed its self-test: refusing to run unsigned")


# --------------------------------------------------------------------------- installing


def installed() -> Keyring | None:
    """The keyring installed in this process, or None."""
    return _state.ring


def _in_use() -> bool:
    return any(not getattr(user, "_closed", False) for user in list(_state.users))


def register(user: Any) -> None:
    """Note that ``user`` (a DataLogger handle) talks with the installed keyring: while it is
    open, :func:`install` refuses another secret in this process."""
    _state.users.add(user)


def use(ring: Keyring, *, fresh_counters: bool = False) -> None:
    """Sign and check frames with ``ring`` from now on, without touching Thespian (tests call
    this; everything else calls :func:`install`)."""
    _state.ring = ring
    _state.prefix = MAGIC + _key_id(ring.secret)
    _state.previous_prefix = MAGIC + _key_id(ring.previous) if ring.previous else b""
    _state.known_frames = _known_frames(ring)
    if fresh_counters or _state.counters is None:
        _state.counters = Rejections()


def install(ring: Keyring, *, node: bool = False) -> None:
    """Sign every Thespian TCP frame of this process, and of the processes it starts, with ``ring``.

    Args:
        ring: what to sign with and accept.
        node: a node is about to start here: give it fresh node-wide counters.

    Raises:
        SecurityError: the hook cannot be installed in this Thespian, an actor
            system already runs unsigned in this process, or an open handle of
            this process uses another secret.
    """
    with _state.lock:
        current = _state.ring
        same = current is not None and (current.sign, current.secret) == (ring.sign, ring.secret)
        if same and not node and _in_use():
            return  # a client of the node this process talks to already: keep the node's keyring
        if current is not None and not same and _in_use():
            raise SecurityError(
                f"this process already talks to a node with the secret {current.source}, and one "
                f"process speaks with one secret: close that handle first, or use it ({ring.source})"
            )
        _check_thespian()
        use(ring, fresh_counters=node)
        _patch_thespian()
    if not ring.sign:
        log.warning(
            "security.sign = false: frames are NOT signed; anyone who can reach this node's ports "
            "can run code as its user (see docs/security.md)"
        )


def install_node(config: Any) -> None:
    """Install the keyring of a node started with ``config`` (making ``<data_dir>/secret``
    at first start)."""
    install(node_keyring(config), node=True)


def install_client(secret_file: Any = None, config: Any = None, data_dir: Any = None) -> None:
    """Install a client's keyring (see :func:`datalogger.keyfiles.client_keyring`).

    Told nothing (no argument, no ``DATALOGGER_SECRET_FILE``), a process that
    already talks to a node keeps that node's keyring.
    """
    told = secret_file is not None or config is not None or data_dir is not None
    if not told and not os.environ.get(SECRET_ENV) and _state.ring is not None and _in_use():
        return
    install(client_keyring(secret_file, config, data_dir))
