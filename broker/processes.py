"""Small facts about this machine's processes and ports, shared by the broker's runner, the demo, the benchmark
and the tests (orchestrators use these rather than keeping copies)."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports of 127.0.0.1 that nothing listens on right now (the kernel may hand the same
    one out twice in a row, hence the check)."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port not in ports:
            ports.append(port)
    return ports


def free_port() -> int:
    return free_ports(1)[0]


def accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def runs_with_argument(pid: int, argument: str | Path) -> bool:
    """Whether process `pid` is alive and has `argument` on its command line: a pid file may name a pid since
    reused by an unrelated process, which a signal meant for ours would hit. A process whose command line we
    may not read (another user's, without root) is taken to be ours: its pid file said so."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return False
    except OSError as error:
        return error.errno in (errno.EACCES, errno.EPERM)
    return os.fsencode(str(argument)) in command_line
