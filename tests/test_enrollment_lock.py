"""Enrollments at once do not lose devices: each takes the site lock around its read-modify-write of site.toml,
passwd and the ACL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from support import wait_until

from broker import passwords
from broker.locks import exclusive_lock
from broker.site import Site, enrolled_devices

ROOT = Path(__file__).resolve().parent.parent


def waiting_for_lock(path: Path, pid: int) -> bool:
    """Whether process `pid` is blocked on a flock of `path` (/proc/locks lists waiters with `->`)."""
    inode = os.stat(path).st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields and str(pid) in fields and any(field.endswith(f":{inode}") for field in fields):
            return True
    return False


def test_an_enrollment_waits_for_the_site_lock(site: Site) -> None:
    site.lock_file.touch()
    with exclusive_lock(site.lock_file):
        process = subprocess.Popen([sys.executable, "-m", "museum", "device", "enroll", "kiosk-01", "--kind", "kiosk",
                                    "--site", str(site.root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   cwd=ROOT)
        try:
            assert wait_until(lambda: waiting_for_lock(site.lock_file, process.pid) or process.poll() is not None,
                              60), "the enrollment neither waited for the lock nor finished"
            assert process.poll() is None, "the enrollment ran while another held the site lock"
            assert enrolled_devices(site) == {}
        except BaseException:
            process.kill()
            raise
    _, error = process.communicate(timeout=60)
    assert process.returncode == 0, error
    assert enrolled_devices(site) == {"kiosk-01": "kiosk"}


ENROLL_MANY = """
import sys
from broker.site import enroll_device, load_site
site = load_site(sys.argv[1])
sys.stdin.readline()  # the start gate: both processes begin together
for number in range(int(sys.argv[3])):
    enroll_device(site, f"{sys.argv[2]}-{number:02d}", "kiosk")
"""


def test_concurrent_enrollments_lose_no_device(site: Site) -> None:
    per_process = 25
    processes = [subprocess.Popen([sys.executable, "-c", ENROLL_MANY, str(site.root), prefix, str(per_process)],
                                  stdin=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
                 for prefix in ("kiosk-a", "kiosk-b")]
    for process in processes:
        assert process.stdin is not None
        process.stdin.write(b"go\n")
        process.stdin.flush()
    for process in processes:
        _, error = process.communicate(timeout=120)
        assert process.returncode == 0, error.decode()

    expected = {f"kiosk-{letter}-{number:02d}" for letter in "ab" for number in range(per_process)}
    assert set(enrolled_devices(site)) == expected
    assert set(passwords.read_password_file(site.password_file)) == expected | {"hub", "publisher"}
    acl = site.acl_file.read_text(encoding="utf-8")
    accounts = expected | {"hub", "publisher", "operator"}  # the operator's rules are there before its account
    assert {line.split()[1] for line in acl.splitlines() if line.startswith("user ")} == accounts
    assert all(site.device_config(device_id).exists() for device_id in expected)
