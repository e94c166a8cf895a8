"""Decoding: each decoder on generated camera frames (codes 90–320 px in 1280×720 cluttered scenes, rotated,
noisy, blurred), their refusal to raise on any frame, the multi-scale strategy stage by stage and on part of the
hard set, the candidate regions, and the debouncer on a given clock."""

from __future__ import annotations

import random
import sys

import pytest

from qr import synthetic
from qr.decode import DECODERS, Debouncer, DecoderUnavailable, Strategy, candidate_regions, make_decoder
from qr.frames import Decoded, Frame

TEXT = "https://visit.example.org/v/AAAAAAAAAAAAAAAAAAAAAA"


def read(found: list[Decoded], text: str) -> bool:
    return any(decoded.text == text for decoded in found)


def near(decoded: Decoded, sample: synthetic.Sample) -> bool:
    """The decoded corners surround the code's centre, in the frame's own pixels (stages map them back)."""
    left, top, right, bottom = decoded.box
    cx, cy = sample.center
    reach = synthetic.rotated_side(sample.side_px, sample.angle) // 2 + 8
    return left < cx < right and top < cy < bottom and right - left <= 2 * reach and bottom - top <= 2 * reach


# --- each decoder --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", DECODERS)
@pytest.mark.parametrize("side, angle, sigma, blur", [(300, 0, 3, 0.0), (200, 33, 8, 0.0), (160, 80, 5, 0.7)])
def test_each_decoder_reads_a_code_in_a_scene(name: str, side: int, angle: float, sigma: float, blur: float) -> None:
    decoder = make_decoder(name)
    for kind, text in (("visit", TEXT), ("tag", "MUSEUM-TAG:demo:t-00000000002a"), ("foreign", "Ticket #42")):
        sample = synthetic.render(text, seed=side, side=side, angle=angle, sigma=sigma, blur=blur, kind=kind)
        found = decoder.decode(sample.frame)
        assert read(found, text), (name, kind)
        assert all(near(decoded, sample) for decoded in found)
    assert decoder.errors == 0


@pytest.mark.parametrize("name", DECODERS)
def test_each_decoder_finds_nothing_in_an_empty_scene(name: str) -> None:
    decoder = make_decoder(name)
    assert decoder.decode(synthetic.empty_frame(3)) == []
    assert decoder.errors == 0


def broken_frame(width: int, height: int, gray: bytes) -> Frame:
    """A Frame whose bytes do not match its size: Frame refuses to build one, a bug elsewhere might."""
    frame = object.__new__(Frame)
    for name, value in (("width", width), ("height", height), ("gray", gray)):
        object.__setattr__(frame, name, value)
    return frame


ODD_FRAMES = [
    pytest.param(lambda: Frame(1, 1, b"\x00"), id="one pixel"),
    pytest.param(lambda: Frame(3, 2000, bytes(6000)), id="a sliver"),
    pytest.param(lambda: Frame(64, 64, b"\xff" * 4096), id="white"),
    pytest.param(lambda: Frame(640, 480, random.Random(1).randbytes(640 * 480)), id="pure noise"),
    pytest.param(lambda: broken_frame(100, 100, b"\x00" * 10), id="too few bytes"),
    pytest.param(lambda: broken_frame(-5, 3, b""), id="negative size"),
]


@pytest.mark.parametrize("name", DECODERS)
@pytest.mark.parametrize("make", ODD_FRAMES)
def test_decoders_and_the_strategy_never_raise(name: str, make) -> None:
    frame = make()
    decoder = make_decoder(name)
    assert decoder.decode(frame) == []
    strategy = Strategy(make_decoder(name))
    assert strategy.read(frame) == []
    assert strategy.stats.frames == 1


@pytest.mark.parametrize("name", DECODERS)
def test_a_decoder_failure_is_counted(name: str) -> None:
    decoder = make_decoder(name)
    assert decoder.decode(broken_frame(100, 100, b"\x00" * 10)) == []
    assert decoder.errors == 1
    assert decoder.last_error


def test_an_unknown_or_missing_decoder_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="unknown decoder 'opencv'; choose one of zxing, zbar"):
        make_decoder("opencv")
    for module in ("qr.zbar", "pyzbar", "pyzbar.pyzbar"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.setitem(sys.modules, "pyzbar", None)  # what Python does for a package that is not installed
    with pytest.raises(DecoderUnavailable, match="pip install pyzbar; apt install libzbar0"):
        make_decoder("zbar")
    monkeypatch.delitem(sys.modules, "qr.zxing", raising=False)
    monkeypatch.setitem(sys.modules, "zxingcpp", None)
    with pytest.raises(DecoderUnavailable, match="pip install zxing-cpp"):
        make_decoder("zxing")


# --- the strategy ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("side, angle, sigma, blur, stage", [
    (300, 10, 5, 0.0, "downscaled"),   # large and clean: a quarter of the pixels is plenty
    (110, 20, 8, 0.0, "full"),         # modules under 3 px: too small once downscaled
    (150, 60, 28, 0.8, "candidate"),   # noisy and blurred: only a smoothed, enlarged crop reads
])
def test_each_stage_reads_what_the_earlier_ones_cannot(side: int, angle: float, sigma: float, blur: float,
                                                       stage: str) -> None:
    strategy = Strategy(make_decoder("zxing"))
    for seed in range(3):
        sample = synthetic.render(TEXT, seed=seed, side=side, angle=angle, sigma=sigma, blur=blur)
        found = strategy.read(sample.frame)
        assert read(found, TEXT), seed
        assert all(near(decoded, sample) for decoded in found), found
    assert dict(strategy.stats.by_stage) == {stage: 3}


@pytest.fixture(scope="module")
def hard_part() -> list[synthetic.Sample]:
    """A quarter of the benchmark's hard set (its first 40 frames)."""
    return synthetic.hard_set(40, seed=0)


@pytest.mark.parametrize("name", DECODERS)
def test_the_strategy_reads_more_of_the_hard_set_than_its_decoder_alone(name: str,
                                                                         hard_part: list[synthetic.Sample]) -> None:
    decoder = make_decoder(name)
    strategy = Strategy(make_decoder(name))
    alone = sum(read(decoder.decode(s.frame), s.text) for s in hard_part)
    ours = sum(read(strategy.read(s.frame), s.text) for s in hard_part)
    assert ours > alone
    assert ours >= 0.95 * len(hard_part), (name, ours, alone)


def test_the_hard_set_is_what_it_says(hard_part: list[synthetic.Sample]) -> None:
    assert synthetic.hard_set(3, seed=0) == hard_part[:3]  # deterministic
    assert synthetic.hard_set(3, seed=1) != hard_part[:3]
    assert all(s.frame.width == 1280 and s.frame.height == 720 for s in hard_part)
    assert all(90 <= s.side_px <= 320 and 0 <= s.angle <= 90 and 0 <= s.sigma <= 30 for s in hard_part)
    assert {s.kind for s in hard_part} == {"visit", "tag", "foreign"}
    assert any(s.blur for s in hard_part) and not all(s.blur for s in hard_part)


def test_candidate_regions_hold_the_code(hard_part: list[synthetic.Sample]) -> None:
    held = 0
    for sample in hard_part:
        boxes = candidate_regions(sample.frame, 3, 360)
        assert 1 <= len(boxes) <= 3 and len(set(boxes)) == len(boxes)
        assert all(0 <= l < r <= 1280 and 0 <= t < b <= 720 for l, t, r, b in boxes)  # noqa: E741
        cx, cy = sample.center
        held += any(l <= cx < r and t <= cy < b for l, t, r, b in boxes)  # noqa: E741
    assert held == len(hard_part)
    assert candidate_regions(Frame(40, 40, bytes(1600)), 3, 360) == []


def test_two_codes_in_one_frame_are_both_read() -> None:
    sample = synthetic.render(TEXT, seed=5, side=220, angle=0, sigma=2, center=(300, 360))
    other = synthetic.code_image("MUSEUM-TAG:demo:t-00000000002a", 220)
    image = sample.frame.image().copy()
    image.paste(other, (850, 250))
    found = Strategy(make_decoder("zxing")).read(Frame.from_image(image))
    assert {d.text for d in found} == {TEXT, "MUSEUM-TAG:demo:t-00000000002a"}


# --- the debouncer ---------------------------------------------------------------------------------------------

def test_a_code_held_in_view_is_said_once() -> None:
    debounce = Debouncer(repeat_s=3.0)
    seen = [debounce.admit(TEXT, t / 10) for t in range(0, 100)]  # ten frames a second for ten seconds
    assert seen == [True] + [False] * 99
    assert debounce.repeats == 99


@pytest.mark.parametrize("times, expected", [
    ([0, 2.9], [True, False]),
    ([0, 3.0], [True, True]),
    ([0, 2, 4, 6], [True, False, False, False]),    # each sighting restarts the wait
    ([0, 2, 5.1], [True, False, True]),
    ([10, 9], [True, False]),                        # a clock stepping back is not a new showing
])
def test_repeats(times: list[float], expected: list[bool]) -> None:
    debounce = Debouncer(repeat_s=3.0)
    assert [debounce.admit(TEXT, t) for t in times] == expected


def test_texts_are_independent_and_forgotten() -> None:
    debounce = Debouncer(repeat_s=3.0, max_texts=4)
    assert debounce.admit("a", 0) and debounce.admit("b", 0.5) and not debounce.admit("a", 1)
    assert len(debounce) == 2
    for n in range(10):
        debounce.admit(f"x{n}", 2)
    assert len(debounce) == 4  # bounded: the oldest are forgotten first
    assert debounce.admit("a", 2.5)  # forgotten for the bound, so a new showing
    debounce.admit("y", 100)
    assert len(debounce) == 1  # everything older than repeat_s is gone
    assert TEXT.encode() not in b"".join(debounce._last)  # digests only: a visit URL is a capability


def test_zero_repeat_says_every_sighting() -> None:
    debounce = Debouncer(repeat_s=0.0)
    assert all(debounce.admit(TEXT, t) for t in (0, 0, 1))
    with pytest.raises(ValueError):
        Debouncer(repeat_s=-1)
