"""Operator mistakes get one clear line naming the file and the fix, a non-zero exit status and no traceback;
a second hub for a site is refused; a hub without a broker says so once and carries on; and only a missing
optional extra may hide commands from `museum`.

Every command runs as the operator runs it: `python -m museum …` in a process of its own.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Callable
from pathlib import Path

import click
import pytest
from support import wait_until

from broker.mosquitto import MosquittoProcess
from broker.site import Site
from museum.cli import OPTIONAL_MODULES, register

ROOT = Path(__file__).resolve().parent.parent


def museum(*args: str | Path, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "museum", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


def assert_one_line_naming(result: subprocess.CompletedProcess[str], *names: str | Path) -> None:
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for name in names:
        assert str(name) in lines[0], lines[0]


# --- a wrong site directory, a missing or malformed site.toml, for every command that takes one -------------

SITE_COMMANDS = {
    "device enroll": lambda site: ("device", "enroll", "kiosk-99", "--kind", "kiosk", "--site", site),
    "broker run": lambda site: ("broker", "run", "--no-advertise", "--site", site),
    "hub run": lambda site: ("hub", "run", "--site", site),
    "hub stats": lambda site: ("hub", "stats", "--site", site),
    "site renew-certificate": lambda site: ("site", "renew-certificate", "--site", site),
}

BROKEN_SITE_FILES = {
    "toml-syntax": 'site_id = "unterminated\n',
    "wrong-type": 'site_id = 5\ntls_port = 8883\nbind = "0.0.0.0"\n',
    "bad-value": 'site_id = "Not An Id"\ntls_port = 8883\nbind = "0.0.0.0"\n',
    "missing-setting": 'site_id = "a-site"\nbind = "0.0.0.0"\n',
    "port-as-text": 'site_id = "a-site"\ntls_port = "8883"\nbind = "0.0.0.0"\n',
}


@pytest.mark.parametrize("command", SITE_COMMANDS)
def test_a_directory_that_does_not_exist(command: str, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-site"
    assert_one_line_naming(museum(*SITE_COMMANDS[command](missing)), missing, "museum site init")


@pytest.mark.parametrize("command", SITE_COMMANDS)
def test_a_directory_that_is_not_a_site(command: str, tmp_path: Path) -> None:
    assert_one_line_naming(museum(*SITE_COMMANDS[command](tmp_path)), tmp_path, "site.toml")


@pytest.mark.parametrize("broken", BROKEN_SITE_FILES)
@pytest.mark.parametrize("command", SITE_COMMANDS)
def test_a_malformed_site_file(command: str, broken: str, site: Site) -> None:
    site.site_file.write_text(BROKEN_SITE_FILES[broken], encoding="utf-8")
    assert_one_line_naming(museum(*SITE_COMMANDS[command](site.root)), site.site_file)


@pytest.mark.parametrize("content", ["[broker\nhost = 1\n", 'site_id = "test-site"\n',
                                     'site_id = "test-site"\nclient_id = "hub"\nkind = "hub"\n'
                                     '[broker]\nhost = "h"\nport = "x"\nusername = "u"\npassword = "p"\n'],
                         ids=["toml-syntax", "missing-setting", "wrong-type"])
def test_a_malformed_hub_configuration(site: Site, content: str) -> None:
    site.hub_config.write_text(content, encoding="utf-8")
    assert_one_line_naming(museum("hub", "run", "--site", site.root), site.hub_config)


def test_hub_stats_of_a_file_that_is_not_a_database(site: Site) -> None:
    impostor = site.root / "notes.txt"
    impostor.write_text("not SQLite\n" * 100, encoding="utf-8")
    assert_one_line_naming(museum("hub", "stats", "--site", site.root, "--db", impostor), impostor)


def test_hub_stats_before_the_hub_ever_ran(site: Site) -> None:
    assert_one_line_naming(museum("hub", "stats", "--site", site.root), site.hub_database, "museum hub run")


def test_site_init_into_a_directory_in_use(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("x", encoding="utf-8")
    assert_one_line_naming(museum("site", "init", tmp_path, "--site-id", "a-site"), tmp_path)


def test_demo_into_a_directory_in_use(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("x", encoding="utf-8")
    assert_one_line_naming(museum("demo", "--site-dir", tmp_path, "--duration", "1"), tmp_path)


@pytest.mark.parametrize("kind", ["kiosk", "gateway"])
@pytest.mark.parametrize("content", [None, "[broker\n", 'site_id = "test-site"\n'],
                         ids=["missing", "toml-syntax", "missing-setting"])
def test_simulate_with_a_broken_device_configuration(kind: str, content: str | None, tmp_path: Path) -> None:
    config = tmp_path / "device.toml"
    if content is not None:
        config.write_text(content, encoding="utf-8")
    assert_one_line_naming(museum("simulate", kind, "--config", config, "--zone", "room-1"), config)


def test_simulate_with_a_broken_museum_file(site: Site) -> None:
    from broker.site import enroll_device

    config = enroll_device(site, "kiosk-01", "kiosk")
    broken = site.root / "museum.json"
    broken.write_text("{not json", encoding="utf-8")
    assert_one_line_naming(museum("simulate", "kiosk", "--config", config, "--zone", "room-1", "--museum", broken),
                           broken)


def test_docs_check_of_a_missing_page(tmp_path: Path) -> None:
    page = tmp_path / "events.md"
    assert_one_line_naming(museum("docs", "events", "--check", "--output", page), page, "museum docs events")


# --- one hub per site ---------------------------------------------------------------------------------------

def start_hub(site: Site, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as output:
        return subprocess.Popen([sys.executable, "-m", "museum", "hub", "run", "--site", str(site.root), *extra],
                                stdout=output, stderr=output, cwd=ROOT)


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def test_a_second_hub_for_the_site_is_refused_until_the_first_dies(site: Site, broker: MosquittoProcess,
                                                                   tmp_path: Path) -> None:
    first_log = tmp_path / "first.log"
    first = start_hub(site, first_log)
    try:
        # The hub prints this line once it holds the lock, before it connects.
        assert wait_until(lambda: "storing in" in read(first_log), 60), read(first_log)
        second = museum("hub", "run", "--site", site.root)
        assert_one_line_naming(second, "already running", f"pid {first.pid}", site.hub_lock_file)
        assert first.poll() is None, "the first hub must not be disturbed by the refused second one"

        # kill -9 leaves no chance to clean up: the kernel releases the lock with the process.
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        third_log = tmp_path / "third.log"
        third = start_hub(site, third_log)
        try:
            assert wait_until(lambda: "storing in" in read(third_log) or third.poll() is not None, 60)
            assert third.poll() is None, read(third_log)
        finally:
            stop(third)
    finally:
        stop(first)


# --- a hub without a broker ------------------------------------------------------------------------------

def test_a_hub_without_a_broker_says_so_once_and_connects_when_it_starts(
        site: Site, make_broker: Callable[[Site], MosquittoProcess], tmp_path: Path) -> None:
    log = tmp_path / "hub.log"
    # -v also shows each connection attempt (INFO), so the test can see the hub kept trying; the two lines under
    # test are warnings, which the default level shows.
    hub = start_hub(site, log, "-v")
    endpoint = f"mqtt://127.0.0.1:{site.plain_loopback_port}"
    unreachable = f"WARNING broker.hub: hub: cannot reach the broker at {endpoint}"
    attempts = re.compile(r"bus\.mqtt: hub: .*next attempt in")
    try:
        assert wait_until(lambda: len(attempts.findall(read(log))) >= 3, 60), read(log)
        assert read(log).count(unreachable) == 1, read(log)

        make_broker(site)
        assert wait_until(lambda: "WARNING broker.hub: hub: connected to the broker" in read(log), 60), read(log)
        assert read(log).count(unreachable) == 1, read(log)
        assert hub.poll() is None
    finally:
        stop(hub)


# --- missing modules -----------------------------------------------------------------------------------------

@pytest.fixture
def role_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two fake role packages: one whose CLI imports a module of its own that does not exist (a bug), one whose
    CLI needs an optional extra that is not installed (kivy, made missing whatever this machine has)."""
    for name, body in {
        "ops_role_with_a_bug": "import ops_role_with_a_bug.renamed_module\n",
        "ops_role_needing_kivy": "import kivy\n",
    }.items():
        package = tmp_path / name
        package.mkdir()
        (package / "__init__.py").write_text("", encoding="utf-8")
        (package / "cli.py").write_text(body + textwrap.dedent("""
            import click

            @click.command()
            def fake() -> None:
                \"\"\"A fake command.\"\"\"

            COMMANDS = [fake]
        """), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(sys.modules, "kivy", None)  # import kivy now raises ModuleNotFoundError(name="kivy")
    return tmp_path


def test_a_module_missing_inside_our_own_package_is_not_hidden(role_packages: Path) -> None:
    with pytest.raises(ModuleNotFoundError, match="renamed_module"):
        register(click.Group("museum"), ["ops_role_with_a_bug.cli"])


def test_a_missing_optional_extra_hides_its_commands_and_says_what_to_install(role_packages: Path) -> None:
    group = click.Group("museum")
    notes = register(group, ["protocol.cli", "ops_role_needing_kivy.cli"])
    assert set(group.commands) == {"docs"}
    assert len(notes) == 1 and "pip install 'museum-platform[kiosk]'" in notes[0]
    assert "Not installed here" in (group.epilog or "")


def test_museum_help_names_the_extra_of_hidden_commands() -> None:
    program = ("import sys; sys.modules['sqlite_utils'] = None\n"
               "from museum.cli import main\nmain(['--help'])\n")
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "pip install 'museum-platform[hub]'" in " ".join(result.stdout.split())
    assert not re.search(r"^\s+hub\s", result.stdout, re.MULTILINE), result.stdout


def test_the_optional_modules_are_those_of_the_extras() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"]
    distributions = {re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("-", "_"): extra
                     for extra, requirements in extras.items() if extra != "dev" for requirement in requirements}
    assert {IMPORT_NAMES.get(name, name): extra for name, extra in distributions.items()} == OPTIONAL_MODULES


IMPORT_NAMES = {"zxing_cpp": "zxingcpp", "pillow": "PIL"}
"""Distributions whose top-level module has another name."""

