"""The generated event reference: committed, complete, deterministic, and its examples valid."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from protocol import codec
from protocol.cli import docs
from protocol.events import EVENT_TYPES, Event, event_type
from protocol.reference import HUB_ERROR_CODES, contract_error_codes, render_event_reference

REPO = Path(__file__).resolve().parent.parent
COMMITTED = REPO / "docs" / "events.md"


@pytest.fixture(scope="module")
def page() -> str:
    return render_event_reference()


def _sections(page: str, level: str) -> dict[str, str]:
    """Heading text -> body, for the headings of one level ('## ' or '### ')."""
    parts = re.split(rf"^{level}(.+)$", page, flags=re.MULTILINE)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def _type_sections(page: str) -> dict[str, str]:
    sections = {}
    for heading, body in _sections(page, "### ").items():
        match = re.fullmatch(r"`([a-z_.]+)` \(schema_version (\d+)\)", heading)
        if match:
            sections[match.group(1)] = (int(match.group(2)), body)
    return sections


def test_committed_page_is_up_to_date(page: str) -> None:
    assert COMMITTED.exists(), "docs/events.md is missing: run `museum docs events`"
    assert COMMITTED.read_bytes() == page.encode("utf-8"), "docs/events.md is stale: run `museum docs events`"


def test_output_does_not_depend_on_hash_seed(page: str) -> None:
    script = "import sys; from protocol.reference import render_event_reference as r; sys.stdout.buffer.write(" \
             "r().encode())"
    for seed in ("1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, check=True, cwd=REPO)
        assert out.stdout == page.encode("utf-8"), f"output changes with PYTHONHASHSEED={seed}"


def test_every_type_has_a_section_with_its_version_and_fields(page: str) -> None:
    sections = _type_sections(page)
    assert sorted(sections) == sorted(EVENT_TYPES)
    assert list(sections) == sorted(EVENT_TYPES), "types must appear sorted by name"
    for name, cls in EVENT_TYPES.items():
        version, body = sections[name]
        assert version == cls.schema_version
        assert f"visit_id: **{cls.visit_policy}**" in body
        for field_name, spec in cls.specs:
            row = next((line for line in body.splitlines() if line.startswith(f"| `{field_name}` |")), None)
            assert row is not None, f"{name}: no table row for {field_name}"
            assert spec.describe_type() in row.replace("\\|", "|")
            assert ("optional" if spec.optional else "required") in row


def test_every_own_field_name_appears(page: str) -> None:
    for cls in EVENT_TYPES.values():
        for field_name, _ in cls.specs:
            assert f"`{field_name}`" in page


def test_each_example_is_a_valid_event_of_its_type(page: str) -> None:
    for name, (_, body) in _type_sections(page).items():
        blocks = re.findall(r"```json\n(.*?)\n```", body, re.DOTALL)
        assert len(blocks) == 1, f"{name}: expected one JSON example"
        event = codec.decode_event(blocks[0].encode("utf-8"))
        assert event.type == name
        # Every optional field is shown, so readers see its form.
        assert all(value is not None for value in event.own_fields().values())


def test_message_examples_decode(page: str) -> None:
    sections = _sections(page, "### ")
    decoders = {"Presence": codec.decode_presence, "Ack": codec.decode_ack, "Command": codec.decode_command,
                "ContentAnnouncement": codec.decode_content}
    for heading, decode in decoders.items():
        (block,) = re.findall(r"```json\n(.*?)\n```", sections[heading], re.DOTALL)
        decoded = decode(block.encode("utf-8"))
        assert type(decoded).__name__ == heading


def test_intro_states_limits_and_envelope(page: str) -> None:
    intro = page.split("## Event types")[0]
    for limit in (codec.MAX_MESSAGE_BYTES, codec.MAX_EVENT_BYTES, codec.MAX_BATCH_EVENTS):
        assert str(limit) in intro
    assert '{"batch": [' in intro
    assert "museum/v1/{site}/devices/{device}/events" in intro
    assert "unsupported_schema_version" in intro


def test_every_error_code_is_documented(page: str) -> None:
    errors = _sections(page, "## ")["Error codes"]
    codes = set(contract_error_codes()) | set(HUB_ERROR_CODES)
    assert {"device_mismatch", "site_mismatch", "invalid_field", "invalid_topic", "nesting_too_deep"} <= codes
    for code in codes:
        assert re.search(rf"^\| `{code}` \| .+ \| .+ \|$", errors, re.MULTILINE), f"{code} is not documented"


def test_cli_writes_then_checks(tmp_path: Path, page: str) -> None:
    target = tmp_path / "out" / "events.md"
    runner = CliRunner()
    missing = runner.invoke(docs, ["events", "--check", "--output", str(target)])
    assert missing.exit_code == 1
    written = runner.invoke(docs, ["events", "--output", str(target)])
    assert written.exit_code == 0, written.output
    assert target.read_bytes() == page.encode("utf-8")
    assert runner.invoke(docs, ["events", "--check", "--output", str(target)]).exit_code == 0
    target.write_bytes(target.read_bytes() + b"\nhand edit\n")
    stale = runner.invoke(docs, ["events", "--check", "--output", str(target)])
    assert stale.exit_code == 1
    assert "museum docs events" in stale.output


def test_cli_default_output_is_relative_to_cwd(tmp_path: Path, page: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(docs, ["events"]).exit_code == 0
    assert (tmp_path / "docs" / "events.md").read_bytes() == page.encode("utf-8")


def test_museum_command_exposes_docs() -> None:
    from museum.cli import main

    result = CliRunner().invoke(main, ["docs", "events", "--check", "--output", str(COMMITTED)])
    assert result.exit_code == 0, result.output


def test_event_type_without_docstring_is_refused() -> None:
    name = "test.undocumented"
    before = dict(EVENT_TYPES)
    try:
        with pytest.raises(AssertionError, match="docstring"):
            @event_type(name)
            @dataclass(frozen=True, kw_only=True)
            class Undocumented(Event):
                pass
        assert name not in EVENT_TYPES
    finally:
        EVENT_TYPES.pop(name, None)
    assert before == EVENT_TYPES


def test_example_json_is_codec_output(page: str) -> None:
    """The pretty-printed examples carry exactly the codec's keys in the codec's order."""
    from protocol.reference import example_event

    for name, (_, body) in _type_sections(page).items():
        (block,) = re.findall(r"```json\n(.*?)\n```", body, re.DOTALL)
        expected = json.loads(codec.encode_event(example_event(EVENT_TYPES[name])))
        assert list(json.loads(block).items()) == list(expected.items())
