"""The companion service and the sync as an IT team runs them, for the end-to-end tests: `museum companion run`
as a real process with its TOML file, `museum companion enroll-site`, the site's `sync.toml` and key file, and
`museum sync run --once` as a real process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from support import free_ports

from broker.packs import pack_file_name
from broker.site import Site
from content.pack import build_pack, verify_pack
from content.sample import SAMPLE_MUSEUM_PATH

SYNC_TIMEOUT_S = 120.0
START_TIMEOUT_S = 30.0


def museum(*args: str, timeout: float = SYNC_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "museum", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


class CompanionProcess:
    """`museum companion run` on a free port of 127.0.0.1, with a SQLite store in `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.config = folder / "companion.toml"
        (self.port,) = free_ports(1)
        self.url = f"http://127.0.0.1:{self.port}"
        self.config.write_text(f'store = "companion.sqlite"\ndata_dir = "data"\nbase_url = "{self.url}"\n'
                               "[rate_limits]\ntoken_burst = 10000\nsync_burst = 10000\n", encoding="utf-8")
        self.store_path = folder / "companion.sqlite"
        self.log_path = folder / "companion.log"
        self.process: subprocess.Popen[bytes] | None = None

    def enroll(self, site_id: str) -> str:
        result = museum("companion", "enroll-site", site_id, "--config", str(self.config), timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def start(self) -> CompanionProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "museum", "companion", "run", "--config", str(self.config), "--host",
                 "127.0.0.1", "--port", str(self.port)], stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_path.read_text(errors="replace")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"the companion did not start: {self.log_path.read_text(errors='replace')}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def get(self, path: str) -> tuple[int, str]:
        """GET a page of the companion: its status and text (an error page too)."""
        try:
            with urllib.request.urlopen(f"{self.url}{path}", timeout=30) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()


def configure_sync(site: Site, companion: CompanionProcess, key: str, *, name: str = "companion") -> Path:
    """The site's sync.toml with one target, and its key file (0600), as docs/companion.md tells staff to."""
    folder = site.root / "sync"
    folder.mkdir(mode=0o700, exist_ok=True)
    key_file = folder / f"{name}.key"
    key_file.write_text(key + "\n", encoding="utf-8")
    os.chmod(key_file, 0o600)
    config = site.root / "sync.toml"
    config.write_text(f'[[targets]]\nname = "{name}"\nurl = "{companion.url}"\ninterval_s = 1\n', encoding="utf-8")
    return config


def sample_pack_for(site_id: str, folder: Path) -> Path:
    """The sample museum as a pack of site `site_id` (a companion refuses another site's pack)."""
    source = folder / "sample-content"
    shutil.copytree(SAMPLE_MUSEUM_PATH.parent, source)
    museum = json.loads((source / "museum.json").read_text(encoding="utf-8"))
    museum["site_id"] = site_id
    (source / "museum.json").write_text(json.dumps(museum, ensure_ascii=False), encoding="utf-8")
    build_pack(source, folder / "sample.pack")
    return folder / "sample.pack"


def place_pack(site: Site, pack_file: Path) -> Path:
    """The pack in the site's packs folder, as `museum content publish` leaves it (what the sync uploads)."""
    pack = verify_pack(pack_file)
    site.packs_dir.mkdir(parents=True, exist_ok=True)
    dest = site.packs_dir / pack_file_name(pack.pack_id, pack.pack_version)
    shutil.copyfile(pack_file, dest)
    return dest


def sync_once(site: Site) -> subprocess.CompletedProcess[str]:
    result = museum("sync", "run", "--site", str(site.root), "--once", "--no-progress")
    assert result.returncode == 0, f"museum sync run --once failed:\n{result.stdout}\n{result.stderr}"
    return result
