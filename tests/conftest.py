"""Fixtures: a fresh site directory and a real Mosquitto serving it, on free ports of 127.0.0.1.

    def test_x(site, broker): ...                      # defaults: test-site, TLS + plain loopback listener
    @pytest.mark.parametrize("site", [{"max_queued_messages": 5}], indirect=True)
    def test_y(site, broker): ...                      # init_site keyword arguments through indirect params
    def test_z(make_site, make_broker):
        small = make_site(max_queued_messages=5); process = make_broker(small)

And the kiosk's one Kivy window (Kivy makes one per process), shared by every test module that renders it:
`harness` (a kiosk.ui.KioskHarness; each test `reset`s it with its own controller), on the sample content pack
(`sample_pack`, built once to `sample_pack_file`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from support import free_ports

from broker.mosquitto import MosquittoProcess
from broker.site import Site, init_site

if TYPE_CHECKING:
    from kiosk.pack_store import InstalledPack

LEFT_BEHIND = "museum-*"


# --- nothing left in the temporary folder --------------------------------------------------------------------

def pytest_configure(config: pytest.Config) -> None:
    """The suite and every process it starts get a temporary folder of their own (TMPDIR), so that what they
    leave there is theirs, whatever else runs on the machine; `pytest_unconfigure` checks it and removes it."""
    own = Path(tempfile.mkdtemp(prefix="museum-suite-"))
    os.chmod(own, 0o711)  # Mosquitto, dropped to its own user, walks down through it to the sites
    config.stash[_OWN_TMP] = (own, os.environ.get("TMPDIR"), tempfile.tempdir)
    os.environ["TMPDIR"] = str(own)
    tempfile.tempdir = str(own)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Fails the run if a test, the demo or the bench left a `museum-*` directory behind (every session fixture
    has been torn down by now)."""
    own, _, _ = session.config.stash[_OWN_TMP]
    left = sorted(path.name for path in own.glob(LEFT_BEHIND))
    if left:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("")  # the progress dots of -q leave the line open
            reporter.write_line(f"The tests left behind in the temporary folder: {', '.join(left)}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config: pytest.Config) -> None:
    if _OWN_TMP not in config.stash:
        return
    own, tmpdir, tempdir = config.stash[_OWN_TMP]
    if tmpdir is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = tmpdir
    tempfile.tempdir = tempdir
    shutil.rmtree(own, ignore_errors=True)


_OWN_TMP = pytest.StashKey[tuple[Path, "str | None", "str | None"]]()


# --- sites and brokers --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sites_base() -> Iterator[Path]:
    # Not tmp_path: pytest's temporary tree is 0700, and Mosquitto started as root drops privileges to user
    # `mosquitto`, which must be able to walk down to the site's passwd, ACL and persistence directory.
    base = Path(tempfile.mkdtemp(prefix="museum-tests-"))
    os.chmod(base, 0o711)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def make_site(sites_base: Path) -> Callable[..., Site]:
    """Factory: `make_site(**init_site_kwargs)`; site_id defaults to "test-site", ports to free ones."""

    def make(**kwargs: Any) -> Site:
        parent = Path(tempfile.mkdtemp(dir=sites_base))
        os.chmod(parent, 0o711)
        tls_port, plain_port = free_ports(2)
        settings: dict[str, Any] = {"tls_port": tls_port, "bind": "127.0.0.1", "plain_loopback_port": plain_port}
        settings.update(kwargs)
        site_id = settings.pop("site_id", "test-site")
        return init_site(parent / "site", site_id, **settings)

    return make


@pytest.fixture
def site(request: pytest.FixtureRequest, make_site: Callable[..., Site]) -> Site:
    return make_site(**getattr(request, "param", {}))


@pytest.fixture
def make_broker() -> Iterator[Callable[[Site], MosquittoProcess]]:
    """Factory: `make_broker(site)` starts Mosquitto for `site` and waits until it is ready; every broker it
    started is stopped at teardown (killed if it will not stop), whatever the test did."""
    started: list[MosquittoProcess] = []

    def make(site: Site) -> MosquittoProcess:
        process = MosquittoProcess.start(site)
        started.append(process)
        process.wait_ready(60.0)
        return process

    yield make
    for process in reversed(started):
        try:
            process.stop(timeout=5.0)
        except BaseException:
            process.kill()


@pytest.fixture
def broker(site: Site, make_broker: Callable[[Site], MosquittoProcess]) -> MosquittoProcess:
    return make_broker(site)


# --- the kiosk's one Kivy window ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kiosk_work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kiosk-ui")


@pytest.fixture(scope="session")
def sample_pack_file(kiosk_work_dir: Path) -> Path:
    """The sample museum built as a content pack (the archive, as `museum content build` writes it)."""
    from content.pack import build_pack
    from content.sample import SAMPLE_MUSEUM_PATH

    path = kiosk_work_dir / "sample.pack"
    build_pack(SAMPLE_MUSEUM_PATH.parent, path)
    return path


@pytest.fixture(scope="session")
def sample_pack(kiosk_work_dir: Path, sample_pack_file: Path) -> InstalledPack:
    from kiosk.pack_store import PackStore

    return PackStore(kiosk_work_dir / "packs").install(sample_pack_file)


@pytest.fixture(scope="session")
def harness(kiosk_work_dir: Path, sample_pack: InstalledPack) -> Iterator[Any]:
    """The window, offscreen, driven frame by frame; Kivy is imported only here, when a test needs it."""
    if os.environ.get("KIVY_GL_BACKEND") == "mock":
        pytest.fail("KIVY_GL_BACKEND=mock: Kivy would render nothing and these tests would prove nothing")
    from kiosk.controller import KioskController
    from kiosk.ui import KioskHarness

    controller = KioskController(emit=lambda *_args, **_fields: None, companion_base_url="https://visit.example.org")
    controller.show_pack(sample_pack)
    driver = KioskHarness(controller, state_dir=kiosk_work_dir / "state")
    yield driver
    driver.close()
