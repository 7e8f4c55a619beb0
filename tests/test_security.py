"""Signed frames, the restricted unpickler, secret files: the pieces, without a node.

The tests against running nodes (another Unix user, a convention, the command
line) are in tests/test_security_nodes.py.
"""

from __future__ import annotations

import logging
import os
import pickle
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import thespian.system.transport.TCPTransport as tcp

import datalogger
from datalogger import _allowlist, keyfiles, security
from datalogger._rejections import Rejections
from datalogger.config import load_config
from datalogger.exceptions import ConfigError, SecurityError
from datalogger.keyfiles import Keyring
from datalogger.messages import Log
from tests.security_helpers import AttributeChain, Event, Exploit

SECRET = bytes(range(32))
OTHER = bytes(range(1, 33))


@pytest.fixture
def state(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A private frame-signing state for the test (the process's own is put back after)."""
    fresh = security._State()
    monkeypatch.setattr(security, "_state", fresh)
    monkeypatch.setattr(_allowlist, "cache", {})
    security.use(Keyring(secret=SECRET, source="test"))
    return fresh


def frame(obj: Any, secret: bytes = SECRET) -> bytes:
    """A frame as a process signing with ``secret`` sends it."""
    saved = security._state.ring
    assert saved is not None
    security.use(Keyring(secret=secret, source="sender"))
    try:
        return security.SERIALIZER.dumps(obj)
    finally:
        security.use(saved)


def refused(data: bytes) -> str:
    with pytest.raises(security.RejectedFrame) as info:
        security.SERIALIZER.loads(data)
    return str(info.value)


# --------------------------------------------------------------------------- frames


def test_a_signed_frame_round_trips_and_carries_key_id_and_mac(state: Any) -> None:
    message = Log("green", [{"id": 1, "at": "x"}], True, 7)
    data = security.SERIALIZER.dumps(message)
    assert data[:4] == b"DLs1" and len(data) == security.HEADER + len(pickle.dumps(message))
    assert security.SERIALIZER.loads(data) == message
    assert security.rejections()["rejected_frames"] == 0


def test_an_unsigned_pickle_is_dropped_unread(state: Any, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    assert "unsigned" in refused(pickle.dumps(Exploit(str(marker))))
    assert not marker.exists()
    counts = security.rejections()
    assert counts["rejected_frames"] == 1 and counts["rejected_by_reason"] == {"unsigned": 1}


def test_a_frame_signed_with_another_secret_is_dropped(state: Any) -> None:
    assert "unknown secret" in refused(frame({"a": 1}, OTHER))


def test_a_tampered_frame_is_dropped(state: Any) -> None:
    good = bytearray(frame({"amount": 100}))
    good[-5] ^= 1
    assert "bad signature" in refused(bytes(good))
    mac_flipped = bytearray(frame({"amount": 100}))
    mac_flipped[10] ^= 0x80
    assert "bad signature" in refused(bytes(mac_flipped))


@pytest.mark.parametrize("packet", ["ACK", "ACK+DATAERR"])
def test_acknowledgements_are_recognised_whole_and_only_when_signed_with_this_secret(
    state: Any, packet: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thespian's two acknowledgements skip the MAC and the unpickler when they are exactly the
    frames this secret makes; the same bytes with one byte changed, or signed with another
    secret, take the full check and are refused."""
    signed = frame(packet)
    opened: list[bytes] = []
    real_open = security._open
    monkeypatch.setattr(security, "_open", lambda data: opened.append(data) or real_open(data))
    assert security.SERIALIZER.loads(signed) == packet
    assert opened == []  # recognised whole: no MAC computed, nothing unpickled
    tampered = bytearray(signed)
    tampered[10] ^= 1
    assert "bad signature" in refused(bytes(tampered))
    assert "unknown secret" in refused(frame(packet, OTHER))
    assert len(opened) == 2
    assert security.rejections()["rejected_frames"] == 2


def test_truncated_frames_are_dropped(state: Any) -> None:
    good = frame({"a": 1})
    for cut in (4, 8, security.HEADER - 1):
        assert "truncated" in refused(good[:cut])
    assert "unsigned" in refused(good[:3])
    assert "bad signature" in refused(good[:-1])  # the MAC covers every byte of the pickle


def test_a_signed_frame_naming_a_class_outside_the_allow_list_is_refused(
    state: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    assert "forbidden class: posix.system" in refused(frame(Exploit(str(marker))))
    assert not marker.exists()
    assert "forbidden class: tests.security_helpers.Event" in refused(frame(Event("e")))
    assert security.rejections()["rejected_by_reason"] == {"forbidden class": 2}


def test_getattr_in_a_frame_reaches_nothing_but_what_pickling_a_timezone_needs(state: Any) -> None:
    assert "forbidden class: getattr(Log, '__init__')" in refused(frame(AttributeChain()))


def test_allowed_modules_let_your_own_classes_through(state: Any) -> None:
    security.use(Keyring(secret=SECRET, allowed_modules=("tests.security_helpers",)))
    assert security.SERIALIZER.loads(frame(Event("e"))) == Event("e")
    assert "forbidden class" in refused(frame(Exploit("/nonexistent")))  # os.system still is not


@pytest.mark.parametrize(
    ("module", "name", "allowed"),
    [
        ("builtins", "eval", False),
        ("builtins", "getattr", False),
        ("builtins", "__import__", False),
        ("builtins", "type", False),
        ("builtins", "set", True),
        ("builtins", "OSError", True),
        ("os", "system", False),
        ("subprocess", "Popen", False),
        ("datalogger.messages", "Log", True),
        ("datalogger.messages", "Log.__init__", False),
        ("datalogger.actors.root_supervisor", "RootSupervisor", False),
        ("thespian.actors", "ActorAddress", True),
        ("thespian.system.transport.TCPTransport", "TCPTransport", False),
        ("datetime", "datetime", True),
        ("zoneinfo", "ZoneInfo._unpickle", True),
        ("logging", "LogRecord", True),
        ("logging", "FileHandler", False),
    ],
)
def test_the_allow_list(state: Any, module: str, name: str, allowed: bool) -> None:
    assert _allowlist.may_load(module, name) is allowed


def test_plain_data_survives(state: Any) -> None:
    import datetime
    import decimal
    import uuid
    import zoneinfo

    rows = [
        {
            "at": datetime.datetime(2024, 5, 1, 12, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")),
            "utc": datetime.datetime.now(datetime.UTC),
            "d": decimal.Decimal("1.5"),
            "u": uuid.uuid4(),
            "s": {1, 2},
            "b": b"\x00",
        }
    ]
    assert security.SERIALIZER.loads(frame(rows)) == rows


def test_an_oversized_frame_is_cut_off_from_its_announced_size(state: Any) -> None:
    security.use(Keyring(secret=SECRET, max_frame_bytes=65536))
    buffer = security._BoundedReceiveBuffer(security.SERIALIZER.loads)
    buffer.addMore(b"99999999999>" + b"x" * 100)
    buffer.addMore(b"x" * 100_000)
    assert buffer.isDone() and buffer._buf == b""  # nothing kept
    with pytest.raises(security.RejectedFrame, match="oversize"):
        buffer.completed()
    assert security.rejections()["rejected_by_reason"] == {"oversize": 1}
    small = security._BoundedReceiveBuffer(security.SERIALIZER.loads)
    small.addMore(tcp.toSendBuffer({"ok": 1}, security.SERIALIZER.dumps))
    assert small.completed() == ({"ok": 1}, b"")


def test_a_frame_without_a_length_is_malformed(state: Any) -> None:
    for garbage in (b"abc>" + b"x" * 10, b"x" * 25):
        buffer = security._BoundedReceiveBuffer(security.SERIALIZER.loads)
        buffer.addMore(garbage)
        assert buffer.isDone()
        with pytest.raises(security.RejectedFrame, match="malformed"):
            buffer.completed()


def test_a_frame_is_unpickled_once_however_often_thespian_asks(state: Any) -> None:
    calls = []

    def loads(data: bytes) -> Any:
        calls.append(data)
        return security.SERIALIZER.loads(data)

    buffer = security._BoundedReceiveBuffer(loads)
    buffer.addMore(tcp.toSendBuffer(("a", 1), security.SERIALIZER.dumps))
    assert buffer.completed()[0] == buffer.completed()[0] == ("a", 1)
    assert len(calls) == 1


def test_a_dropped_frame_is_logged_once_a_minute_with_the_peer(
    state: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.WARNING, "datalogger.security")
    monkeypatch.setattr(security, "_peer", lambda: "10.1.2.3:40000")
    for _ in range(5):
        refused(b"not a frame at all, long enough to hold a header.......")
    lines = [r.getMessage() for r in caplog.records if r.name == "datalogger.security"]
    assert len(lines) == 1 and "dropped a frame from 10.1.2.3:40000 unread (unsigned" in lines[0]
    state.alerted_at -= security.ALERT_INTERVAL  # a minute later
    refused(b"DLs1")
    lines = [r.getMessage() for r in caplog.records if r.name == "datalogger.security"]
    assert len(lines) == 2 and "4 more dropped by this process" in lines[1]
    assert security.rejections()["refused_peers"][0] | {"last_at": 0} == {
        "peer": "10.1.2.3",
        "frames": 6,
        "last_reason": "truncated",
        "last_at": 0,
    }


def test_dropped_frames_are_counted_across_forked_processes() -> None:
    counters = Rejections()
    children = []
    for host in ("10.0.0.1", "10.0.0.2", "10.0.0.1"):
        pid = os.fork()
        if pid == 0:
            counters.record(host, "bad signature")
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
    snapshot = counters.snapshot()
    assert snapshot["rejected_frames"] == 3
    assert {p["peer"]: p["frames"] for p in snapshot["refused_peers"]} == {"10.0.0.1": 2, "10.0.0.2": 1}


# --------------------------------------------------------------------------- rotation


def rotation(tmp_path: Path, started_ago: float, grace: float = 100.0) -> Keyring:
    new = Path(keyfiles.generate_secret(tmp_path / "new"))
    old = Path(keyfiles.generate_secret(tmp_path / "old"))
    os.utime(new, (time.time() - started_ago, time.time() - started_ago))
    config = load_config(
        {
            "destinations": {"m": {"type": "memory"}},
            "security": {
                "secret_file": str(new),
                "previous_secret_file": str(old),
                "previous_secret_grace": grace,
            },
        }
    )
    return keyfiles.client_keyring(config=config)


def test_early_in_a_rotation_frames_are_signed_with_the_previous_secret(state: Any, tmp_path: Path) -> None:
    ring = rotation(tmp_path, started_ago=10)  # grace 100 s: the first 50 s sign with the old one
    security.use(ring)
    data = security.SERIALIZER.dumps({"a": 1})
    assert data[:8] == security.MAGIC + security._key_id(ring.previous)
    # a process not restarted yet, knowing only the old secret, accepts it
    security.use(Keyring(secret=ring.previous))
    assert security.SERIALIZER.loads(data) == {"a": 1}


def test_later_in_the_grace_both_secrets_are_accepted(state: Any, tmp_path: Path) -> None:
    ring = rotation(tmp_path, started_ago=60)
    old_frame, new_frame = frame({"a": 1}, ring.previous), frame({"a": 2}, ring.secret)
    security.use(ring)
    assert security.SERIALIZER.dumps({"x": 1})[4:8] == security._key_id(ring.secret)
    assert security.SERIALIZER.loads(old_frame) == {"a": 1}
    assert security.SERIALIZER.loads(new_frame) == {"a": 2}


def test_a_frame_signed_with_the_old_secret_after_the_grace_is_refused(state: Any, tmp_path: Path) -> None:
    ring = rotation(tmp_path, started_ago=101)
    old_frame = frame({"a": 1}, ring.previous)
    security.use(ring)
    assert "previous secret expired" in refused(old_frame)
    assert security.SERIALIZER.loads(frame({"a": 2}, ring.secret)) == {"a": 2}


# --------------------------------------------------------------------------- secret files


def test_generate_secret_writes_32_random_bytes_mode_0600_and_never_overwrites(tmp_path: Path) -> None:
    path = Path(keyfiles.generate_secret(tmp_path / "dir" / "secret"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = keyfiles.read_secret(path)
    assert len(secret) == 32
    keyfiles.generate_secret(path)
    assert keyfiles.read_secret(path) == secret
    assert keyfiles.read_secret(keyfiles.generate_secret(tmp_path / "other")) != secret
    assert not [p for p in path.parent.iterdir() if p.name != "secret"]  # no temporary file left


@pytest.mark.parametrize(
    ("content", "mode", "message"),
    [
        (None, 0o600, "does not exist"),
        ("ab" * 32, 0o644, r"open to other users \(mode 0644\): chmod 600"),
        ("ab" * 32, 0o620, "open to other users"),
        ("ab" * 31, 0o600, "at least 64 hexadecimal digits"),
        ("correct horse battery staple, a password is not a secret!!!!!!!", 0o600, "not a datalogger"),
    ],
)
def test_read_secret_says_what_is_wrong(tmp_path: Path, content: str | None, mode: int, message: str) -> None:
    path = tmp_path / "secret"
    if content is not None:
        path.write_text(content + "\n")
        path.chmod(mode)
    with pytest.raises(SecurityError, match=message) as info:
        keyfiles.read_secret(path, "from the test")
    assert str(path) in str(info.value) and "(from the test)" in str(info.value)


def test_a_node_refuses_a_secret_another_user_planted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local user who creates <data_dir>/secret before the node's first start knows it."""
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root (CI runs as root)")
    monkeypatch.delenv(keyfiles.SECRET_ENV, raising=False)
    planted = Path(keyfiles.generate_secret(tmp_path / "state" / "secret"))
    os.chown(planted, 65534, 65534)  # nobody
    config = load_config({"data_dir": str(tmp_path / "state"), "destinations": {"m": {"type": "memory"}}})
    with pytest.raises(SecurityError, match="belongs to user id 65534, not to this user"):
        keyfiles.node_keyring(config)
    assert len(keyfiles.client_keyring(config=config).secret) == 32  # a client only talks with it


def test_a_group_readable_secret_is_accepted(tmp_path: Path) -> None:
    path = Path(keyfiles.generate_secret(tmp_path / "secret"))
    path.chmod(0o640)
    assert len(keyfiles.read_secret(path)) == 32


def test_where_the_secret_is_looked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(keyfiles.SECRET_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    config = load_config({"data_dir": "state", "destinations": {"m": {"type": "memory"}}})
    assert keyfiles.secret_path(None, config.security, config.data_dir) == (
        str(tmp_path / "state" / "secret"),
        "in the data_dir",
    )
    assert keyfiles.secret_path()[0] == str(tmp_path / ".datalogger" / "secret")
    monkeypatch.setenv(keyfiles.SECRET_ENV, "env-secret")
    assert keyfiles.secret_path(None, config.security, config.data_dir)[0] == str(tmp_path / "env-secret")
    named = load_config({"destinations": {"m": {"type": "memory"}}, "security": {"secret_file": "named"}})
    assert keyfiles.secret_path(None, named.security, named.data_dir)[0] == str(tmp_path / "named")
    assert keyfiles.secret_path("given", named.security, None)[0] == str(tmp_path / "given")


def test_a_node_makes_its_secret_at_first_start_and_keeps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(keyfiles.SECRET_ENV, raising=False)
    config = load_config({"data_dir": str(tmp_path / "state"), "destinations": {"m": {"type": "memory"}}})
    first = keyfiles.node_keyring(config)
    assert stat.S_IMODE((tmp_path / "state" / "secret").stat().st_mode) == 0o600
    assert keyfiles.node_keyring(config).secret == first.secret
    with pytest.raises(SecurityError, match="does not exist"):  # a client never makes one
        keyfiles.client_keyring(data_dir=tmp_path / "elsewhere")
    assert keyfiles.client_keyring(config=config).secret == first.secret


@pytest.mark.parametrize(
    ("security_table", "message"),
    [
        ({"sign": "no"}, "security.sign must be true or false"),
        ({"secret_file": 3}, "security.secret_file must be a file path"),
        ({"allowed_modules": "myapp"}, "security.allowed_modules must be a list"),
        ({"allowed_modules": ["my app"]}, "is not a module name"),
        ({"max_frame_bytes": 10}, "at least 65536"),
        ({"previous_secret_grace": -1}, "non-negative"),
        ({"signing": True}, "unknown option 'signing'"),
    ],
)
def test_the_security_table_is_checked(security_table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config({"destinations": {"m": {"type": "memory"}}, "security": security_table})


# --------------------------------------------------------------------------- installing


def test_install_fails_loudly_when_thespian_lacks_what_the_hook_needs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(tcp.TCPTransport, "_check_XMIT_4_done")
    with pytest.raises(SecurityError, match="lacks _check_XMIT_4_done; refusing to run unsigned"):
        security._check_thespian()


def test_install_refuses_when_an_unsigned_actor_system_runs_in_the_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Unsigned:
        transport = object.__new__(tcp.TCPTransport)

    monkeypatch.setattr(datalogger.security.ActorSystem, "systemBase", Unsigned(), raising=False)
    with pytest.raises(SecurityError, match="created in this process before datalogger installed"):
        security._check_thespian()


def test_a_process_without_the_hook_refuses_to_run_the_transport() -> None:
    """What a process Thespian started by 'spawn' would do: it imports the class, not our state."""
    script = (
        "from thespian.system.transport import ExternalInterfaceTransportInit\n"
        "from datalogger.security import SignedTCPTransport\n"
        "try:\n"
        "    SignedTCPTransport(ExternalInterfaceTransportInit(), {}, None, None)\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert "SecurityError" in result.stdout and "refusing to run an unsigned transport" in result.stdout


def test_one_process_speaks_with_one_secret(tmp_path: Path, start_node: Any) -> None:
    dl = start_node({"data_dir": str(tmp_path / "state"), "destinations": {"m": {"type": "memory"}}})
    other = keyfiles.generate_secret(tmp_path / "other")
    with pytest.raises(SecurityError, match="one process speaks with one secret"):
        datalogger.connect(dl.admin_port, secret_file=other, make_default=False)
    assert dl.log("green", [{"id": 1}]) >= 1  # the node's handle still talks
