"""Running the site's Mosquitto in the foreground, as a child process we can stop, kill and reload.

Run as root, Mosquitto drops privileges to user `mosquitto` once its listeners are open, and from then on
reads its password and ACL files (on every SIGHUP) and writes its persistence and log as that user. So before
starting it as root we hand those files to `mosquitto`; the site CA key stays root's alone.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from broker.processes import accepts, runs_with_argument

if TYPE_CHECKING:
    from broker.site import Site

MOSQUITTO_USER = "mosquitto"
_FALLBACK_BINARY = Path("/usr/sbin/mosquitto")

LOG_MAX_BYTES = 10 * 1024 * 1024
"""`museum broker run` rotates mosquitto.log once it is larger than this."""
LOG_KEEP = 5
"""Rotated logs kept (mosquitto.log.1 … .5): with the live one, the log never takes more than about
(LOG_KEEP + 1) × LOG_MAX_BYTES, 60 MiB, plus what Mosquitto writes between two checks."""


class MosquittoError(RuntimeError):
    """Mosquitto could not be found, started, or did not come up."""


def find_binary() -> Path:
    found = shutil.which("mosquitto")
    if found:
        return Path(found)
    # /usr/sbin is often not on a non-root PATH, and that is where Debian puts the broker.
    if _FALLBACK_BINARY.exists():
        return _FALLBACK_BINARY
    raise MosquittoError("the mosquitto broker is not installed: run `make demo` or `make test` (they install "
                         "it) or `apt-get install mosquitto`")


class MosquittoProcess:
    """One Mosquitto process serving a site, started by `MosquittoProcess.start(site)`."""

    def __init__(self, site: Site, process: subprocess.Popen[bytes], log_offset: int = 0) -> None:
        self.site = site
        self._process = process
        self._log_offset = log_offset

    @classmethod
    def start(cls, site: Site) -> MosquittoProcess:
        binary = find_binary()
        other = running_pid(site)
        if other is not None:
            raise MosquittoError(f"Mosquitto is already running for site {site.site_id!r} (pid {other}, "
                                 f"see {site.pid_file})")
        site.log_file.touch(mode=0o640)
        _prepare_permissions(site)
        log_offset = site.log_file.stat().st_size
        with site.log_file.open("ab") as log:
            # Output goes to the broker's log, so the errors it prints before its own logging is set up (a bad
            # configuration, a port in use) are in the tail we show. A new session keeps a Ctrl-C on the
            # terminal from reaching Mosquitto directly: whoever started it stops it, cleanly.
            process = subprocess.Popen([str(binary), "-c", str(site.mosquitto_conf)], stdin=subprocess.DEVNULL,
                                       stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        site.pid_file.write_text(f"{process.pid}\n", encoding="ascii")
        return cls(site, process, log_offset)

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def alive(self) -> bool:
        return self._process.poll() is None

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Return once the first listener accepts connections; raise with the log's tail if Mosquitto died.

        Another program listening on our port would accept the connection while Mosquitto is still failing to
        bind it, so readiness also needs the line Mosquitto logs once every listener is open.
        """
        host = _connect_host(self.site.bind)
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive:
                self._forget_pid_file()
                raise MosquittoError(f"Mosquitto exited with status {self._process.returncode}; the end of "
                                     f"{self.site.log_file}:\n{log_tail(self.site)}")
            # The log is read first so the port is probed once, not on every turn (each probe is a log line).
            if self._logged_running() and accepts(host, self.site.tls_port):
                return
            if time.monotonic() > deadline:
                raise MosquittoError(f"Mosquitto did not come up on {host}:{self.site.tls_port} within "
                                     f"{timeout:g} s; the end of {self.site.log_file}:\n{log_tail(self.site)}")
            time.sleep(0.05)

    def _logged_running(self) -> bool:
        with self.site.log_file.open("rb") as log:
            log.seek(self._log_offset)
            return re.search(rb"mosquitto version \S+ running", log.read()) is not None

    def reload(self) -> None:
        """Make Mosquitto re-read its password file, ACL, certificates and reloadable settings, and reopen its
        log file."""
        if self.alive:
            self._process.send_signal(signal.SIGHUP)

    def rotate_log_if_needed(self, max_bytes: int = LOG_MAX_BYTES, keep: int = LOG_KEEP) -> bool:
        """Rotate mosquitto.log once it is larger than `max_bytes`, keeping `keep` old ones; returns whether it
        rotated. Mosquitto (2.0) reopens its log file on SIGHUP, which is what makes it write to the new one."""
        if not self.alive or not log_needs_rotation(self.site, max_bytes):
            return False
        rotate_log(self.site, keep)
        self._log_offset = 0
        self.reload()
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, so Mosquitto saves its persistence database; SIGKILL if it does not exit in time."""
        if self.alive:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._forget_pid_file()

    def kill(self) -> None:
        """SIGKILL: a crash, as far as Mosquitto's persistence is concerned."""
        if self.alive:
            self._process.kill()
        self._process.wait()
        self._forget_pid_file()

    def __enter__(self) -> MosquittoProcess:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def _forget_pid_file(self) -> None:
        with contextlib.suppress(FileNotFoundError, ValueError):
            if int(self.site.pid_file.read_text(encoding="ascii").strip()) == self.pid:
                self.site.pid_file.unlink()


def running_pid(site: Site) -> int | None:
    """The pid of the Mosquitto serving `site`, from its pid file, if that process is still this site's broker."""
    try:
        pid = int(site.pid_file.read_text(encoding="ascii").strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if runs_with_argument(pid, site.mosquitto_conf) else None


def reload_running(site: Site) -> bool:
    """SIGHUP the site's running broker, if there is one; returns whether there was."""
    pid = running_pid(site)
    if pid is None:
        return False
    os.kill(pid, signal.SIGHUP)
    return True


def log_needs_rotation(site: Site, max_bytes: int = LOG_MAX_BYTES) -> bool:
    try:
        return site.log_file.stat().st_size > max_bytes
    except FileNotFoundError:
        return False


def rotated_log(site: Site, number: int) -> Path:
    return site.log_file.with_name(f"{site.log_file.name}.{number}")


def rotate_log(site: Site, keep: int = LOG_KEEP) -> None:
    """mosquitto.log → .1 → .2 … → .`keep` (the oldest is deleted), then a new empty mosquitto.log with the old
    one's owner and mode. Mosquitto keeps writing to the renamed file until it is told to reopen (SIGHUP); the new
    file is created here because Mosquitto, once it has dropped privileges, may not create files in its
    directory."""
    if keep < 1:
        raise ValueError("keep at least one rotated log")
    log = site.log_file
    try:
        info = log.stat()
    except FileNotFoundError:
        return
    rotated_log(site, keep).unlink(missing_ok=True)
    for number in range(keep - 1, 0, -1):
        with contextlib.suppress(FileNotFoundError):
            rotated_log(site, number).rename(rotated_log(site, number + 1))
    fresh = log.with_name(f".{log.name}.new")
    fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, stat.S_IMODE(info.st_mode))
    os.close(fd)
    if (info.st_uid, info.st_gid) != (os.geteuid(), os.getegid()):
        os.chown(fresh, info.st_uid, info.st_gid)
    log.rename(rotated_log(site, 1))
    fresh.rename(log)


def log_tail(site: Site, lines: int = 20) -> str:
    try:
        text = site.log_file.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "(no log written)"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def _connect_host(bind: str) -> str:
    if bind in ("0.0.0.0", ""):
        return "127.0.0.1"
    if bind == "::":
        return "::1"
    return bind


def _prepare_permissions(site: Site) -> None:
    """As root, give the files Mosquitto uses after dropping privileges to user `mosquitto`."""
    if os.geteuid() != 0:
        return  # Mosquitto keeps our identity, which already owns every file of the site.
    try:
        account = pwd.getpwnam(MOSQUITTO_USER)
    except KeyError:
        return  # Without a `mosquitto` user, Mosquitto cannot drop privileges and stays root.
    uid, gid = account.pw_uid, account.pw_gid
    for path, mode in ((site.persistence_dir, 0o700), (site.log_file, 0o640), (site.password_file, 0o600),
                       (site.acl_file, 0o600), (site.server_key, 0o600), (site.server_cert, 0o644)):
        os.chown(path, uid, gid)
        os.chmod(path, mode)
        _check_reachable(path, uid, gid)
    os.chown(site.ca_key, 0, 0)
    os.chmod(site.ca_key, 0o600)


def _check_reachable(path: Path, uid: int, gid: int) -> None:
    groups = {gid, *os.getgrouplist(MOSQUITTO_USER, gid)}
    for directory in path.absolute().parents:
        info = directory.stat()
        if info.st_uid == uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid in groups:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            raise MosquittoError(
                f"Mosquitto drops privileges to user {MOSQUITTO_USER!r}, which cannot enter {directory} "
                f"(mode {stat.filemode(info.st_mode)}) to reach {path}. Put the site directory under one it can "
                f"traverse (such as /srv/museum) or allow it: chmod o+x {directory}")
