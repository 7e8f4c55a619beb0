"""Secret files: where a node's secret lives, how it is made, read and rotated.

A secret is at least :data:`MIN_SECRET_BYTES` random bytes, written as
hexadecimal on one line in a file only its owner (and, with mode 0640, its
group) can read. A node takes it from, in order:

1. ``security.secret_file`` in its configuration;
2. the file named by the environment variable :data:`SECRET_ENV`;
3. ``<data_dir>/secret``, created (mode 0600) at the node's first start.

A client (``datalogger.connect()``, the command line) looks in the same
places, with an explicit file (``secret_file=``, ``--secret-file``) first, and
``.datalogger`` (the default ``data_dir``) when it has no configuration. It
never creates a secret. Make one for a convention with
``datalogger secret generate PATH`` and name it on every member.
"""

from __future__ import annotations

import logging
import os
import stat
from typing import Any

import attrs

from .exceptions import SecurityError

__all__ = [
    "MIN_SECRET_BYTES",
    "SECRET_ENV",
    "SECRET_NAME",
    "Keyring",
    "add_arguments",
    "add_parser",
    "client_keyring",
    "generate_secret",
    "node_keyring",
    "read_secret",
    "rotation_times",
]

SECRET_ENV = "DATALOGGER_SECRET_FILE"
"""Environment variable naming the secret file (below ``security.secret_file``)."""
SECRET_NAME = "secret"
"""The secret's file name in a node's ``data_dir``."""
MIN_SECRET_BYTES = 32
"""A secret holds at least this many random bytes."""
DEFAULT_MAX_FRAME = 256 * 1024 * 1024
"""Largest frame accepted unless ``security.max_frame_bytes`` says otherwise."""
IN_DATA_DIR = "in the data_dir"


@attrs.frozen
class Keyring:
    """What a process signs its frames with, and what it accepts."""

    sign: bool = True
    """False: frames are plain pickles (``security.sign = false``, unsafe)."""
    secret: bytes = attrs.field(default=b"", repr=False)
    previous: bytes = attrs.field(default=b"", repr=False)
    """The previous secret while rotating (see :func:`rotation_times`)."""
    sign_previous_until: float = 0.0
    """Epoch seconds until which frames are signed with the previous secret."""
    previous_until: float = 0.0
    """Epoch seconds until which frames signed with the previous secret are accepted."""
    source: str = ""
    """Where the secret came from, for messages."""
    allowed_modules: tuple[str, ...] = ()
    """Modules whose classes frames may carry, beyond the built-in allow list."""
    max_frame_bytes: int = DEFAULT_MAX_FRAME
    """Largest frame accepted."""


def generate_secret(path: str | os.PathLike[str]) -> str:
    """Write a new secret to ``path`` (mode 0600) and return the absolute path.

    Never overwrites: when ``path`` exists (another process made it first),
    that file is kept.
    """
    import secrets
    import tempfile

    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".secret-", dir=os.path.dirname(path))  # mode 0600
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(MIN_SECRET_BYTES) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)  # atomic, and fails when the file exists
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)
    return path


def read_secret(path: str | os.PathLike[str], found: str = "", *, own: bool = False) -> bytes:
    """The secret in ``path``; ``found`` says how the path was chosen, for messages.

    With ``own`` (a node reading its own secret), the file must belong to this
    process's user or to root: a secret another user planted is known to them.

    Raises:
        SecurityError: the file is missing, unreadable, not a regular file,
            open to other users (readable or writable by others, writable by
            its group), not owned as ``own`` asks, or holds fewer than 64
            hexadecimal digits.
    """
    where = f"the secret file {path}" + (f" ({found})" if found else "")
    try:
        with open(path, "rb") as handle:
            info = os.fstat(handle.fileno())
            raw = handle.read(4096)
    except FileNotFoundError:
        raise SecurityError(
            f"{where} does not exist: a node creates <data_dir>/secret at its first start; name the "
            f"node's secret with --secret-file, {SECRET_ENV} or security.secret_file"
        ) from None
    except PermissionError:
        raise SecurityError(
            f"cannot read {where}: permission denied; run as the node's user, or let this user "
            "read it through a group (chmod 640)"
        ) from None
    except OSError as exc:
        raise SecurityError(f"cannot read {where}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise SecurityError(f"{where} is not a regular file")
    if own and info.st_uid not in (os.geteuid(), 0):
        raise SecurityError(
            f"{where} belongs to user id {info.st_uid}, not to this user ({os.geteuid()}) or root: "
            "a node takes only a secret its own user owns"
        )
    if info.st_mode & (stat.S_IROTH | stat.S_IWOTH | stat.S_IWGRP):
        raise SecurityError(
            f"{where} is open to other users (mode {stat.S_IMODE(info.st_mode):04o}): chmod 600 it"
        )
    try:
        secret = bytes.fromhex(raw.decode("ascii").strip())
    except ValueError:
        secret = b""
    if len(secret) < MIN_SECRET_BYTES:
        raise SecurityError(
            f"{where} is not a datalogger secret: it must hold at least {2 * MIN_SECRET_BYTES} "
            "hexadecimal digits; make one with `datalogger secret generate PATH`"
        )
    return secret


def secret_path(secret_file: Any = None, settings: Any = None, data_dir: Any = None) -> tuple[str, str]:
    """The secret file to use and how it was chosen (see the module docstring)."""
    if secret_file:
        return os.path.abspath(secret_file), "given"
    if settings is not None and settings.secret_file:
        return os.path.abspath(settings.secret_file), "security.secret_file"
    if os.environ.get(SECRET_ENV):
        return os.path.abspath(os.environ[SECRET_ENV]), SECRET_ENV
    return os.path.abspath(os.path.join(data_dir or ".datalogger", SECRET_NAME)), IN_DATA_DIR


def rotation_times(path: str | os.PathLike[str], grace: float) -> tuple[float, float]:
    """When a rotation to the secret in ``path`` moves on: ``(sign_previous_until, previous_until)``.

    The rotation starts when the new secret was written (the file's
    modification time, the same on every host that copies it with ``cp -p``):
    for the first half of ``grace`` every process signs with the previous
    secret, so processes not yet restarted understand it; for the whole grace
    both are accepted; after it, only the new one.
    """
    started = os.stat(path).st_mtime
    return started + grace / 2, started + grace


def _keyring(settings: Any, path: str, found: str, own: bool = False) -> Keyring:
    secret = read_secret(path, found, own=own)
    previous = b""
    sign_previous_until = previous_until = 0.0
    if settings is not None and settings.previous_secret_file:
        previous = read_secret(settings.previous_secret_file, "security.previous_secret_file", own=own)
        sign_previous_until, previous_until = rotation_times(path, settings.previous_secret_grace)
    return Keyring(
        sign=True,
        secret=secret,
        previous=previous,
        sign_previous_until=sign_previous_until,
        previous_until=previous_until,
        source=f"{path} ({found})",
        allowed_modules=tuple(settings.allowed_modules) if settings is not None else (),
        max_frame_bytes=int(settings.max_frame_bytes) if settings is not None else DEFAULT_MAX_FRAME,
    )


def node_keyring(config: Any) -> Keyring:
    """The keyring of a node started with ``config``; makes ``<data_dir>/secret`` at first start."""
    settings = config.security
    if not settings.sign:
        return Keyring(
            sign=False,
            source="security.sign = false",
            allowed_modules=tuple(settings.allowed_modules),
            max_frame_bytes=int(settings.max_frame_bytes),
        )
    path, found = secret_path(None, settings, config.data_dir)
    if found == IN_DATA_DIR and not os.path.exists(path):
        try:
            generate_secret(path)
        except OSError as exc:
            raise SecurityError(f"cannot create the node's secret {path}: {exc.strerror or exc}") from exc
        logging.getLogger("datalogger.security").info("made the node's secret %s (mode 0600)", path)
    return _keyring(settings, path, found, own=True)


def client_keyring(secret_file: Any = None, config: Any = None, data_dir: Any = None) -> Keyring:
    """The keyring of a client: ``secret_file``, else as the node of ``config`` would find it,
    else :data:`SECRET_ENV`, else ``<data_dir>/secret`` (``data_dir`` defaults to ``.datalogger``)."""
    settings = getattr(config, "security", None)
    if secret_file is None and settings is not None and not settings.sign:
        return node_keyring(config)
    path, found = secret_path(secret_file, settings, data_dir or getattr(config, "data_dir", None))
    return _keyring(settings, path, found)


# --------------------------------------------------------------------------- command line


def cmd_secret_generate(args: Any) -> int:
    """``datalogger secret generate PATH``: a new secret, never over an existing file."""
    from rich.console import Console

    if os.path.lexists(args.path):
        raise SecurityError(f"{args.path} exists: a secret is never overwritten (remove it first)")
    path = generate_secret(args.path)
    Console().print(f"wrote a new secret to {path} (mode 0600)")
    return 0


def add_arguments(parser: Any) -> None:
    """The options by which a command that talks to a node finds the node's secret."""
    parser.add_argument(
        "--secret-file",
        help=f"the node's secret file (default: ${SECRET_ENV}, else .datalogger/secret)",
    )
    parser.add_argument(
        "--config", help="the node's TOML configuration: its secret_file, data_dir and security"
    )


def add_parser(sub: Any) -> None:
    """Add the ``secret`` command to the ``datalogger`` command's subparsers."""
    p = sub.add_parser("secret", help="make the secret file nodes and clients sign frames with")
    secret_sub = p.add_subparsers(dest="secret_command", required=True)
    q = secret_sub.add_parser("generate", help="write a new secret (32 random bytes, mode 0600)")
    q.add_argument("path", help="the file to create")
    q.set_defaults(func=cmd_secret_generate)
