"""Mosquitto 2.0 password files, written in pure Python.

A line is `username:$7$101$<salt>$<hash>`: PBKDF2-HMAC-SHA512 with 101 iterations over a 12-byte random salt,
both in standard base64, exactly what `mosquitto_passwd` writes. Producing it here means a site can be set up
without the Mosquitto tools installed, and enrolling a device never shells out.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import tempfile
from collections.abc import Mapping
from pathlib import Path

ITERATIONS = 101
SALT_BYTES = 12
_PREFIX = "$7$"


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """The `$7$…` hash Mosquitto stores for `password` (a fresh random salt unless one is given)."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return f"{_PREFIX}{iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(encoded: str, password: str) -> bool:
    """Whether `password` matches a `$7$` hash (as Mosquitto would decide)."""
    if not encoded.startswith(_PREFIX):
        return False
    try:
        iterations_text, salt_text, digest_text = encoded[len(_PREFIX):].split("$")
        iterations = int(iterations_text)
        salt = base64.b64decode(salt_text, validate=True)
        expected = base64.b64decode(digest_text, validate=True)
    except (ValueError, binascii.Error):
        return False
    actual = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return hmac.compare_digest(actual, expected)


def check_username(username: str) -> str:
    # ':' separates the fields of a line and a newline ends it; either would corrupt the whole file.
    if not username or any(c in username for c in ":\n\r\0"):
        raise ValueError(f"username {username!r} cannot go in a Mosquitto password file")
    return username


def parse_password_file(text: str) -> dict[str, str]:
    """username → stored hash, in file order; blank lines and comments are skipped."""
    entries: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        username, sep, encoded = line.partition(":")
        if not sep or not username:
            raise ValueError(f"password file line {number} is not 'username:hash'")
        entries[username] = encoded
    return entries


def read_password_file(path: Path) -> dict[str, str]:
    path = Path(path)
    return parse_password_file(path.read_text(encoding="utf-8")) if path.exists() else {}


def write_password_file(path: Path, entries: Mapping[str, str]) -> None:
    """Write username → hash entries, replacing the file atomically."""
    text = "".join(f"{check_username(user)}:{encoded}\n" for user, encoded in entries.items())
    replace_file(Path(path), text, mode=0o600)


def set_password(path: Path, username: str, password: str) -> None:
    """Add `username` to the password file, or replace its password if it is already there."""
    entries = read_password_file(path)
    entries[check_username(username)] = hash_password(password)
    write_password_file(path, entries)


def replace_file(path: Path, content: str | bytes, *, mode: int) -> None:
    """Atomically replace `path` with `content` (text is written as UTF-8), keeping the owner and group of the
    file it replaces.

    Keeping the owner matters: once Mosquitto has dropped privileges it re-reads its password and ACL files, and
    its certificate and key, on SIGHUP as user `mosquitto`, so a rewrite by root must not hand the file back to
    root. The temporary file is created 0600 (mkstemp), so a secret is never readable by others, even for an
    instant.
    """
    data = content.encode("utf-8") if isinstance(content, str) else content
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        previous = path.stat()
    except FileNotFoundError:
        previous = None
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        if previous is not None and (previous.st_uid, previous.st_gid) != (os.geteuid(), os.getegid()):
            os.chown(temporary, previous.st_uid, previous.st_gid)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
